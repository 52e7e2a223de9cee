"""Evaluation: segmentation (confusion matrices, mIoU, threshold sweeps), boxes and WSOL
(also accumulated one map at a time), multi-label classification (AP, mAP), and bootstrap
intervals."""

from loupe.metrics.bootstrap import (
    BootstrapInterval,
    bootstrap_miou_ci,
    bootstrap_miou_difference,
)
from loupe.metrics.boxes import EMPTY_BOX, box_from_map, box_iou, boxes_from_map, inclusive_boxes
from loupe.metrics.classification import average_precision, mean_average_precision
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
from loupe.metrics.sweep_bootstrap import (
    ResampledCurves,
    confusion_stats,
    miou_from_stats,
    resample_curves,
)
from loupe.metrics.wsol import (
    BoxAccuracy,
    PairRecord,
    best_box_iou,
    box_accuracy,
    default_cam_thresholds,
    gt_known_localization,
    max_box_accuracy,
    pair_record,
    pxap,
    pxap_counts,
    pxap_edges,
    pxap_from_counts,
    summarize_localization,
    top1_localization,
)

__all__ = [
    "EMPTY_BOX",
    "BootstrapInterval",
    "BoxAccuracy",
    "PairRecord",
    "ResampledCurves",
    "SweepSummary",
    "average_precision",
    "best_box_iou",
    "bootstrap_miou_ci",
    "bootstrap_miou_difference",
    "box_from_map",
    "box_iou",
    "box_accuracy",
    "boxes_from_map",
    "confusion_matrix",
    "confusion_stats",
    "default_cam_thresholds",
    "default_thresholds",
    "gt_known_localization",
    "inclusive_boxes",
    "iou_per_class",
    "max_box_accuracy",
    "mean_average_precision",
    "mean_iou",
    "miou_from_stats",
    "pixel_accuracy",
    "pair_record",
    "precision_per_class",
    "pxap",
    "pxap_counts",
    "pxap_edges",
    "pxap_from_counts",
    "recall_per_class",
    "resample_curves",
    "sweep_confusions",
    "summarize_localization",
    "sweep_summary",
    "top1_localization",
]
