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
from loupe.mapsets.files import read_run_description


@dataclass(frozen=True)
class Source:
    """One method to evaluate: a folder of map files (``kind="maps"``) or of paletted mask
    PNGs (``kind="masks"``), and the name it has in the reports. ``method`` is the map method
    recorded in the folder's ``maps.json`` (None when unknown)."""

    name: str
    folder: Path
    kind: str
    method: str | None = None

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
        method = None
        if kind == "maps" and (folder / "maps.json").is_file():
            method = read_run_description(folder / "maps.json", "maps.json").get("method")
        name = names[i] if names is not None else folder.name
        sources.append(Source(name, folder, kind, method))
    taken = [s.name for s in sources]
    if len(set(taken)) != len(taken):
        raise ValueError(f"two folders have the same name ({', '.join(taken)}); give --names")
    return tuple(sources)


def ignored_class_indices(
    class_names: Sequence[str], ignore_classes: Sequence[str] = (), class_map: str | None = None
) -> tuple[int, ...]:
    """The sorted indices of the data-set classes left out of the segmentation scores: those
    named in ``ignore_classes`` and, with ``class_map`` (what ``loupe maps --class-map`` takes:
    ``"coco_to_imagenet"`` or a JSON file ``{data-set class name: [classifier indices]}``,
    read by :func:`loupe.data.mapping.load_class_map`), every
    class but class 0 whose set of classifier classes is empty.

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
