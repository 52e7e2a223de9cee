"""Data sets: images with image-level labels, class-index masks and boxes, read lazily.

``open_dataset(kind, root, split, **options)`` opens one of:

========== ===================================================== ===========================
kind       layout                                                class
========== ===================================================== ===========================
voc        PASCAL VOC 2012 segmentation (+ SBD ``*Aug``)          :class:`VOCSegmentation`
voc-boxes  VOC ``Annotations/*.xml`` boxes                         :class:`VOCBoxes`
coco       COCO 2014/2017 instance JSON -> semantic masks          :class:`COCOSegmentation`
folder     ``images/``, ``masks/``, optional labels and names      :class:`FolderSegmentation`
yolo       Ultralytics YOLO segmentation polygons                  :class:`YOLOSegmentation`
wsol       wsolevaluation metadata (boxes)                         :class:`WSOLMetadata`
========== ===================================================== ===========================

Every data set yields :class:`Sample` objects and has ``ids``, ``class_names`` (index 0 =
background for the segmentation sets), ``num_classes``, ``images=False`` (masks/boxes only)
and ``transform`` (applied to the PIL image). Batch them with
``DataLoader(dataset, collate_fn=collate_samples)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from loupe.data.base import (
    IGNORE_INDEX,
    Batch,
    ImageDataset,
    PathLike,
    Sample,
    collate_samples,
    labels_from_mask,
    read_index_mask,
)
from loupe.data.coco import COCO_CLASSES, COCOSegmentation
from loupe.data.folder import FolderSegmentation
from loupe.data.mapping import (
    ClassMapping,
    class_mapping,
    load_name_table,
    mapped_scores,
    mapped_targets,
)
from loupe.data.voc import VOC_CLASSES, VOCBoxes, VOCSegmentation
from loupe.data.wsol import WSOLMetadata
from loupe.data.yolo import YOLOSegmentation

DATASET_KINDS: Mapping[str, Callable[..., ImageDataset]] = MappingProxyType({
    "voc": VOCSegmentation,
    "voc-boxes": VOCBoxes,
    "coco": COCOSegmentation,
    "folder": FolderSegmentation,
    "yolo": YOLOSegmentation,
    "wsol": WSOLMetadata,
})
"""Kind name -> data-set class (read-only)."""


def list_dataset_kinds() -> list[str]:
    """The kinds :func:`open_dataset` accepts, sorted."""
    return sorted(DATASET_KINDS)


def open_dataset(
    kind: str, root: PathLike, split: str | None = None, **options: Any
) -> ImageDataset:
    """Open a data set of ``kind`` at ``root``; ``split`` and ``options`` as the class takes
    them (see each class). Only index files are read here; items are read on access.

    ``split=None`` takes each kind's default (VOC segmentation ``train``, VOC boxes ``val``,
    COCO ``val2017``, the whole folder for folder/yolo, the metadata folder itself for wsol).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown data set kind {kind!r}; choose one of: "
                         f"{', '.join(list_dataset_kinds())}")
    factory = DATASET_KINDS[kind]
    if split is None:
        return factory(root, **options)
    return factory(root, split, **options)


__all__ = [
    "COCO_CLASSES",
    "DATASET_KINDS",
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "Batch",
    "COCOSegmentation",
    "ClassMapping",
    "FolderSegmentation",
    "ImageDataset",
    "Sample",
    "VOCBoxes",
    "VOCSegmentation",
    "WSOLMetadata",
    "YOLOSegmentation",
    "class_mapping",
    "collate_samples",
    "labels_from_mask",
    "list_dataset_kinds",
    "load_name_table",
    "mapped_scores",
    "mapped_targets",
    "open_dataset",
    "read_index_mask",
]
