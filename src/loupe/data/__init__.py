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
ilsvrc     ImageNet CLS-LOC per-image XML boxes                    :class:`ILSVRCBoxes`
========== ===================================================== ===========================

Every data set yields :class:`Sample` objects and has ``ids``, ``class_names`` (index 0 =
background for the segmentation sets), ``num_classes``, ``images=False`` (masks/boxes only)
and ``transform`` (applied to the PIL image). Batch them with
``DataLoader(dataset, collate_fn=collate_samples)``.

What a command names (``--dataset --root --split ...``) is a :class:`DatasetSpec`, opened by
:func:`open_spec`; training opens splits with :func:`open_split` (:mod:`loupe.data.spec`).
"""

from loupe.data.base import (
    IGNORE_INDEX,
    Batch,
    ImageDataset,
    Sample,
    collate_samples,
    labels_from_mask,
    read_index_mask,
)
from loupe.data.coco import COCO_CLASSES, COCOSegmentation
from loupe.data.folder import FolderSegmentation
from loupe.data.ilsvrc import ILSVRCBoxes
from loupe.data.kinds import DATASET_KINDS, list_dataset_kinds, open_dataset
from loupe.data.mapping import (
    ClassMapping,
    class_correspondence,
    class_mapping,
    has_background,
    load_name_table,
    mapped_scores,
    mapped_targets,
)
from loupe.data.spec import DatasetSpec, SyntheticSplits, open_spec, open_split
from loupe.data.voc import VOC_CLASSES, VOCBoxes, VOCSegmentation
from loupe.data.wsol import WSOLMetadata
from loupe.data.yolo import YOLOSegmentation

__all__ = [
    "COCO_CLASSES",
    "DATASET_KINDS",
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "Batch",
    "COCOSegmentation",
    "ClassMapping",
    "DatasetSpec",
    "FolderSegmentation",
    "ILSVRCBoxes",
    "ImageDataset",
    "Sample",
    "SyntheticSplits",
    "VOCBoxes",
    "VOCSegmentation",
    "WSOLMetadata",
    "YOLOSegmentation",
    "class_correspondence",
    "class_mapping",
    "collate_samples",
    "has_background",
    "labels_from_mask",
    "list_dataset_kinds",
    "load_name_table",
    "mapped_scores",
    "mapped_targets",
    "open_dataset",
    "open_spec",
    "open_split",
    "read_index_mask",
]
