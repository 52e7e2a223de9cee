"""What ``loupe evaluate`` scores: map or mask folders (:class:`Source`), and the data-set
classes it leaves out of the segmentation scores (:func:`ignored_class_indices`, applied with
:func:`relabel`)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from loupe.data.mapping import load_class_map
from loupe.mapsets.files import output_path, read_run_description


@dataclass(frozen=True)
class Source:
    """One method to evaluate: a folder of map files (``kind="maps"``) or of paletted mask
    PNGs (``kind="masks"``), and the name it has in the reports. ``method`` is the map method
    recorded in the folder's ``maps.json`` (None when unknown); ``correspondence`` is how its
    maps' classes were matched to the classifier's (``maps.json``'s, for a masks folder that
    of the maps its ``masks.json`` names; None when unknown)."""

    name: str
    folder: Path
    kind: str
    method: str | None = None
    correspondence: dict | None = None

    @property
    def suffix(self) -> str:
        return ".npz" if self.kind == "maps" else ".png"

    @property
    def is_baseline(self) -> bool:
        return bool(self.method) and str(self.method).startswith("baseline-")


def make_sources(
    maps: Sequence[Path], masks: Sequence[Path], names: Sequence[str] | None = None
) -> tuple[Source, ...]:
    """Sources from ``--maps`` and ``--masks`` folders (in that order), named by ``names``
    or by the folders' names. Errors name the folder: missing, or without any map/mask file."""
    folders = [(Path(p), "maps") for p in maps] + [(Path(p), "masks") for p in masks]
    if not folders:
        raise ValueError("give at least one --maps or --masks folder")
    if names is not None and len(names) != len(folders):
        raise ValueError(f"--names gives {len(names)} names for {len(folders)} folders")
    sources = []
    for i, (folder, kind) in enumerate(folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"--{kind} {folder}: folder not found")
        suffix = ".npz" if kind == "maps" else ".png"
        if next(folder.rglob(f"*{suffix}"), None) is None:
            raise ValueError(f"--{kind} {folder}: empty {kind} folder (no *{suffix} files)")
        described = _maps_description(folder, kind)
        method = described.get("method") if kind == "maps" else None
        correspondence = described.get("correspondence")
        name = names[i] if names is not None else folder.name
        sources.append(Source(name, folder, kind, method,
                              correspondence if isinstance(correspondence, dict) else None))
    taken = [s.name for s in sources]
    if len(set(taken)) != len(taken):
        raise ValueError(f"two folders have the same name ({', '.join(taken)}); give --names")
    return tuple(sources)


def check_source_files(sources: Sequence[Source], ids: Sequence[str], shown: int = 5) -> None:
    """A FileNotFoundError, before any work, when a folder lacks the file of an image of the
    data set: the folder, how many are missing and the first few ids."""
    for source in sources:
        missing = [i for i in ids if not output_path(source.folder, i, source.suffix).is_file()]
        if missing:
            first = ", ".join(repr(i) for i in missing[:shown])
            more = ", ..." if len(missing) > shown else ""
            raise FileNotFoundError(
                f"--{source.kind} {source.folder}: no {source.kind[:-1]} file for {len(missing)} "
                f"of the {len(ids)} images of the data set ({first}{more}); make them for the "
                f"same data-set options (loupe maps), or check --{source.kind} and --limit")


def _maps_description(folder: Path, kind: str) -> dict:
    """The ``maps.json`` behind a folder: its own (maps), or that of the maps folder its
    ``masks.json`` names (masks); empty when there is none."""
    if kind == "masks":
        if not (folder / "masks.json").is_file():
            return {}
        maps = read_run_description(folder / "masks.json", "masks.json").get("maps")
        folder = Path(maps) if isinstance(maps, str) else folder / "-"
    if not (folder / "maps.json").is_file():
        return {}
    return read_run_description(folder / "maps.json", "maps.json")


@dataclass(frozen=True)
class RecordedClassMap:
    """The class map the folders' ``maps.json`` record: its name (what ``--class-map`` was)
    and, when recorded, the data-set classes without a counterpart."""

    name: str
    without_counterpart: tuple[str, ...] | None


def recorded_class_map(sources: Sequence[Source]) -> RecordedClassMap | None:
    """What ``loupe evaluate`` applies without ``--class-map``: the class map that every
    folder that records one was made with (None when none records one). A ValueError
    naming ``--class-map`` when the folders disagree (some made with another class map, or
    with none): scoring them alike would be silently wrong for some."""
    seen: list[tuple[str, RecordedClassMap | None]] = []
    for source in sources:
        if source.correspondence is None:
            continue  # nothing recorded (e.g. maps written by other code)
        name = source.correspondence.get("class_map")
        names = source.correspondence.get("without_counterpart")
        seen.append((source.name, None if name is None else RecordedClassMap(
            str(name), None if names is None else tuple(names))))
    choices = {choice for _, choice in seen}
    if len(choices) > 1:
        made = "; ".join(f"{s}: {'--class-map ' + c.name if c else 'no class map'}"
                         for s, c in seen)
        raise ValueError(f"the folders were made with different class maps ({made}); give "
                         "--class-map to say which classes to score, or evaluate them apart")
    return next(iter(choices), None)


def ignored_class_indices(
    class_names: Sequence[str], ignore_classes: Sequence[str] = (), class_map: str | None = None,
    recorded: RecordedClassMap | None = None,
) -> tuple[int, ...]:
    """The sorted indices of the data-set classes left out of the segmentation scores: those
    named in ``ignore_classes`` and, with ``class_map`` (what ``loupe maps --class-map`` takes:
    ``"coco_to_imagenet"`` or a JSON file ``{data-set class name: [classifier indices]}``,
    read by :func:`loupe.data.mapping.load_class_map`), every
    class but class 0 whose set of classifier classes is empty.

    Without ``class_map``, ``recorded`` (:func:`recorded_class_map`) stands for it: its
    classes without a counterpart as ``maps.json`` lists them (or its class map, loaded).

    Class 0 is the background of the pseudo-masks (the threshold rule's label) and cannot be
    ignored. Errors name the argument: an unknown name (with close matches), the background,
    a class map that does not fit the data set, or nothing left to evaluate."""
    names = list(class_names)
    ignored: set[int] = set()
    for name in ignore_classes:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = (f"close matches: {', '.join(repr(c) for c in close)}" if close
                    else f"the classes are {', '.join(repr(c) for c in names[:8])}"
                    + (", ..." if len(names) > 8 else ""))
            raise ValueError(f"--ignore-classes {name!r} is not a class of the data set; {hint}")
        index = names.index(name)
        if index == 0:
            raise ValueError(f"--ignore-classes {name!r}: class 0 is the background of the "
                             "masks and cannot be ignored")
        ignored.add(index)
    if class_map is None and recorded is not None:
        if recorded.without_counterpart is None:
            class_map = recorded.name
        else:
            ignored.update(names.index(n) for n in recorded.without_counterpart if n in names)
    if class_map is not None:
        try:
            mapping = load_class_map(class_map, names)
        except (FileNotFoundError, ValueError) as error:  # file errors name the file already
            where = "" if str(error).startswith(class_map) else f"{class_map}: "
            raise type(error)(f"--class-map {where}{error}") from error
        ignored.update(c for c in range(1, len(names)) if not mapping[c])
    if ignored and len(ignored) == len(names) - 1:
        raise ValueError("--ignore-classes/--class-map leave no class but the background; "
                         "nothing to evaluate")
    return tuple(sorted(ignored))


def relabel(labels: torch.Tensor, ignored: torch.Tensor, value: int) -> torch.Tensor:
    """``labels`` (any shape) with every entry in ``ignored`` ``(M,)`` replaced by ``value``.

    How ignored classes leave the scores: ground truth -> 255 (not counted), map labels -> -1
    (padding: the map never wins a pixel, like a class's all-zero map), predicted mask
    labels -> 0 (background: the class is not in the evaluated label space)."""
    return torch.where(torch.isin(labels, ignored.to(labels)), value, labels)
