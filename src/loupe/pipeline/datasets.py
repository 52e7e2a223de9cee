"""Opening the data set a pipeline command works on, with the options the CLI exposes.

Kinds are those of :func:`loupe.data.open_dataset` plus ``synthetic`` (the seeded set of
:mod:`loupe.data.synthetic`, split as ``loupe train`` splits it: ``train`` from ``seed``,
``val`` from ``seed + 1``, ``test`` from ``seed + 2``), so maps can be made for exactly the
images a classifier was trained or validated on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loupe.data import COCO_CLASSES, list_dataset_kinds, open_dataset
from loupe.data.base import read_class_names
from loupe.training.common import SyntheticSplits, open_split

PIPELINE_KINDS = (*list_dataset_kinds(), "synthetic")


@dataclass(frozen=True)
class DatasetSpec:
    """What identifies a data set: kind, root, split and the options that change its items.

    class_names: a file of names (one per line), or ``"coco"`` for the 80 COCO names (YOLO
    folders without a ``data.yaml``, such as coco128-seg). For ``folder`` and ``wsol`` the
    file lists every class (``folder``: line 0 = background); for ``yolo`` the object classes.
    limit: only the first ``limit`` images (0 = all).
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

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (synthetic sizes only for the synthetic set)."""
        data = asdict(self)
        if self.kind != "synthetic":
            for key in ("synthetic_train", "synthetic_val", "synthetic_size", "synthetic_seed"):
                data.pop(key)
        return data


def open_pipeline_dataset(spec: DatasetSpec, *, images: bool = True) -> Any:
    """The data set ``spec`` describes; ``images=False`` reads annotations only (not
    available for ``synthetic``, whose images are in memory anyway). Errors name the
    argument or the file."""
    if spec.kind not in PIPELINE_KINDS:
        raise ValueError(f"--dataset {spec.kind!r} is not a data set kind; choose one of: "
                         f"{', '.join(PIPELINE_KINDS)}")
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
    options: dict[str, Any] = {}
    if spec.kind in ("voc", "voc-boxes", "coco", "folder", "yolo", "wsol"):
        options["images"] = images
    if spec.split_file:
        if spec.kind not in ("voc", "voc-boxes"):
            raise ValueError(f"--split-file is only for voc and voc-boxes, not {spec.kind}")
        options["split_file"] = spec.split_file
    if spec.labels_file:
        if spec.kind not in ("voc", "folder"):
            raise ValueError(f"--labels-file is only for voc and folder, not {spec.kind}")
        options["labels_file"] = spec.labels_file
    if spec.class_names:
        names = (list(COCO_CLASSES) if spec.class_names == "coco"
                 else read_class_names(spec.class_names))
        key = {"yolo": "names", "folder": "class_names", "wsol": "class_names"}.get(spec.kind)
        if key is None:
            raise ValueError(f"--class-names is only for yolo, folder and wsol, not {spec.kind}")
        options[key] = names
    return open_dataset(spec.kind, spec.root, spec.split, **options)


def selected_count(dataset: Any, spec: DatasetSpec) -> int:
    """How many images (from the start of ``dataset.ids``) the run covers."""
    total = len(dataset)
    return min(total, spec.limit) if spec.limit else total
