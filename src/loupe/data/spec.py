"""Which data set a command works on, and opening it.

:class:`DatasetSpec` is what ``loupe maps``, ``masks`` and ``evaluate`` take (``--dataset
--root --split ...``); :func:`open_split` is what training takes (a kind, a root and a
split). Kinds are those of :func:`loupe.data.open_dataset` plus ``synthetic``: the seeded set
of :mod:`loupe.data.synthetic`, split as ``loupe train`` splits it (:class:`SyntheticSplits`:
``train`` from ``seed``, ``val`` from ``seed + 1``, ``test`` from ``seed + 2``), so maps can be
made for exactly the images a classifier was trained or validated on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loupe.data.base import read_class_names
from loupe.data.coco import COCO_CLASSES
from loupe.data.kinds import list_dataset_kinds, open_dataset
from loupe.data.selection import select_half
from loupe.data.synthetic import SyntheticConfig, make_synthetic

#: The kinds a :class:`DatasetSpec` opens.
SPEC_KINDS = (*list_dataset_kinds(), "synthetic")
#: The kinds training opens with :func:`open_split` (image-level labels and, for
#: segmentation, masks).
SPLIT_KINDS = ("voc", "coco", "folder", "yolo", "synthetic")
_SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SyntheticSplits:
    """Sizes and seed of the synthetic splits: ``train`` uses ``seed``, ``val`` ``seed + 1``,
    ``test`` ``seed + 2``; ``scenes`` are the generator's parameters (see
    :mod:`loupe.data.synthetic`)."""

    n_train: int = 400
    n_val: int = 100
    size: int = 96
    seed: int = 0
    scenes: SyntheticConfig = field(default_factory=SyntheticConfig)


def open_split(kind: str, root: str | None, split: str,
               synthetic: SyntheticSplits | None = None,
               options: dict[str, Any] | None = None) -> Any:
    """A data set of ``kind`` (one of :data:`SPLIT_KINDS`) for ``split``, yielding
    :class:`loupe.data.base.Sample`; ``root`` is ignored for ``"synthetic"``; ``options``
    go to :func:`loupe.data.open_dataset` (e.g. ``names`` of a YOLO set)."""
    if kind not in SPLIT_KINDS:
        raise ValueError(
            f"unknown dataset kind {kind!r}; choose one of: {', '.join(SPLIT_KINDS)}"
        )
    if kind == "synthetic":
        synthetic = synthetic or SyntheticSplits()
        if split not in _SPLIT_OFFSETS:
            raise ValueError(f"synthetic data has splits train, val, test; got {split!r}")
        n = synthetic.n_val if split != "train" else synthetic.n_train
        return make_synthetic(n, synthetic.size, synthetic.seed + _SPLIT_OFFSETS[split],
                              synthetic.scenes)
    if root is None:
        raise ValueError(f"--root is required for dataset kind {kind!r}")
    return open_dataset(kind, root, split, **(options or {}))


@dataclass(frozen=True)
class DatasetSpec:
    """What identifies a data set: kind, root, split and the options that change its items.

    class_names: a file of names (one per line), or ``"coco"`` for the 80 COCO names (YOLO
    folders without a ``data.yaml``, such as coco128-seg). For ``folder`` and ``wsol`` the
    file lists every class (``folder``: line 0 = background); for ``yolo`` the object classes.
    limit: only the first ``limit`` images (0 = all), counted after ``split_by_id``.
    split_by_id: ``"all"``, or ``"dev"`` / ``"test"``: the first ``n // 2`` ids in sorted
        order / the rest (:mod:`loupe.data.selection`).
    """

    kind: str
    root: str | None = None
    split: str | None = None
    split_file: str | None = None
    labels_file: str | None = None
    class_names: str | None = None
    limit: int = 0
    synthetic_train: int = SyntheticSplits.n_train
    synthetic_val: int = SyntheticSplits.n_val
    synthetic_size: int = SyntheticSplits.size
    synthetic_seed: int = SyntheticSplits.seed
    split_by_id: str = "all"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (synthetic sizes only for the synthetic set;
        ``split_by_id`` only when it is not ``"all"``, so that runs made before it existed
        still match)."""
        data = asdict(self)
        if self.split_by_id == "all":
            data.pop("split_by_id")
        if self.kind != "synthetic":
            for key in ("synthetic_train", "synthetic_val", "synthetic_size", "synthetic_seed"):
                data.pop(key)
        return data


def open_spec(spec: DatasetSpec, *, images: bool = True) -> Any:
    """The data set ``spec`` describes (its ``split_by_id`` half); ``images=False`` reads
    annotations only (not available for ``synthetic``, whose images are in memory anyway).
    Errors name the argument or the file."""
    return select_half(_open_whole(spec, images), spec.split_by_id)


def _open_whole(spec: DatasetSpec, images: bool) -> Any:
    """The whole data set of ``spec`` (before ``split_by_id``)."""
    if spec.kind not in SPEC_KINDS:
        raise ValueError(f"--dataset {spec.kind!r} is not a data set kind; choose one of: "
                         f"{', '.join(SPEC_KINDS)}")
    if spec.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {spec.limit}")
    if spec.kind == "synthetic":
        splits = SyntheticSplits(spec.synthetic_train, spec.synthetic_val, spec.synthetic_size,
                                 spec.synthetic_seed)
        return open_split("synthetic", None, spec.split or "train", splits)
    if spec.root is None:
        raise ValueError(f"--root is required for --dataset {spec.kind}")
    if not Path(spec.root).exists():
        raise FileNotFoundError(f"--root {spec.root}: folder not found")
    return open_dataset(spec.kind, spec.root, spec.split, **_spec_options(spec, images))


def _spec_options(spec: DatasetSpec, images: bool) -> dict[str, Any]:
    """The keyword options of :func:`loupe.data.open_dataset` that ``spec`` asks for."""
    options: dict[str, Any] = {}
    if spec.kind in ("voc", "voc-boxes", "coco", "folder", "yolo", "wsol", "ilsvrc"):
        options["images"] = images
    if spec.split_file:
        if spec.kind not in ("voc", "voc-boxes"):
            raise ValueError(f"--split-file is only for voc and voc-boxes, not {spec.kind}")
        options["split_file"] = spec.split_file
    if spec.labels_file:
        if spec.kind not in ("voc", "folder"):
            raise ValueError(f"--labels-file is only for voc and folder, not {spec.kind}")
        options["labels_file"] = spec.labels_file
    if spec.class_names and spec.kind == "ilsvrc":  # the synsets: LOC_synset_mapping.txt
        options["synsets"] = spec.class_names
    elif spec.class_names:
        names = (list(COCO_CLASSES) if spec.class_names == "coco"
                 else read_class_names(spec.class_names))
        key = {"yolo": "names", "folder": "class_names", "wsol": "class_names"}.get(spec.kind)
        if key is None:
            raise ValueError(f"--class-names is only for yolo, folder, wsol and ilsvrc, not "
                             f"{spec.kind}")
        options[key] = names
    return options


def selected_count(dataset: Any, spec: DatasetSpec) -> int:
    """How many images (from the start of ``dataset.ids``) the run covers."""
    total = len(dataset)
    return min(total, spec.limit) if spec.limit else total
