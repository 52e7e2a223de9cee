"""Evaluation: segmentation (confusion matrices, mIoU, threshold sweeps), boxes and WSOL,
and bootstrap intervals."""

from loupe.metrics.bootstrap import (
    BootstrapInterval,
    bootstrap_miou_ci,
    bootstrap_miou_difference,
)
from loupe.metrics.boxes import EMPTY_BOX, box_from_map, box_iou, boxes_from_map
from loupe.metrics.segmentation import (
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
)
from loupe.metrics.sweep import (
    SweepSummary,
    default_thresholds,
    sweep_confusions,
    sweep_summary,
)
from loupe.metrics.wsol import (
    BoxAccuracy,
    best_box_iou,
    default_cam_thresholds,
    gt_known_localization,
    max_box_accuracy,
    pxap,
    top1_localization,
)

__all__ = [
    "EMPTY_BOX",
    "BootstrapInterval",
    "BoxAccuracy",
    "SweepSummary",
    "best_box_iou",
    "bootstrap_miou_ci",
    "bootstrap_miou_difference",
    "box_from_map",
    "box_iou",
    "boxes_from_map",
    "confusion_matrix",
    "default_cam_thresholds",
    "default_thresholds",
    "gt_known_localization",
    "iou_per_class",
    "max_box_accuracy",
    "mean_iou",
    "pixel_accuracy",
    "precision_per_class",
    "pxap",
    "recall_per_class",
    "sweep_confusions",
    "sweep_summary",
    "top1_localization",
]
