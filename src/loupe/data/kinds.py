"""The data-set kinds :func:`open_dataset` opens, by name (the table is in :mod:`loupe.data`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from loupe.data.base import ImageDataset, PathLike
from loupe.data.coco import COCOSegmentation
from loupe.data.folder import FolderSegmentation
from loupe.data.ilsvrc import ILSVRCBoxes
from loupe.data.voc import VOCBoxes, VOCSegmentation
from loupe.data.wsol import WSOLMetadata
from loupe.data.yolo import YOLOSegmentation

DATASET_KINDS: Mapping[str, Callable[..., ImageDataset]] = MappingProxyType({
    "voc": VOCSegmentation,
    "voc-boxes": VOCBoxes,
    "coco": COCOSegmentation,
    "folder": FolderSegmentation,
    "yolo": YOLOSegmentation,
    "wsol": WSOLMetadata,
    "ilsvrc": ILSVRCBoxes,
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
    COCO ``val2017``, the whole folder for folder/yolo, the metadata folder itself for wsol,
    ILSVRC ``val``).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown data set kind {kind!r}; choose one of: "
                         f"{', '.join(list_dataset_kinds())}")
    factory = DATASET_KINDS[kind]
    if split is None:
        return factory(root, **options)
    return factory(root, split, **options)
