"""Training: multi-label classifiers for WSSS (:func:`train_classifier`), DeepLabV3 from
pseudo-masks (:func:`train_segmenter`), and loading what they write (:func:`load_model`)."""

from loupe.training.checkpoints import load_model, preprocessing_of
from loupe.training.classifier import (
    ClassifierConfig,
    average_precision,
    build_classifier,
    mean_average_precision,
    train_classifier,
)
from loupe.training.common import SyntheticSplits
from loupe.training.segmentation import (
    SegmentationConfig,
    build_segmenter,
    evaluate_segmenter,
    predict_masks,
    train_segmenter,
)
from loupe.training.transforms import Augmentation, Preprocessing

__all__ = [
    "Augmentation",
    "ClassifierConfig",
    "Preprocessing",
    "SegmentationConfig",
    "SyntheticSplits",
    "average_precision",
    "build_classifier",
    "build_segmenter",
    "evaluate_segmenter",
    "load_model",
    "mean_average_precision",
    "predict_masks",
    "preprocessing_of",
    "train_classifier",
    "train_segmenter",
]
