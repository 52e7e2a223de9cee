"""Training: multi-label classifiers for WSSS (:func:`train_classifier`) and DeepLabV3 from
pseudo-masks (:func:`train_segmenter`), both tasks of the one loop (:func:`train`) with the
shared :class:`Recipe`. The models and their files are in :mod:`loupe.models`."""

from loupe.training.classifier import ClassifierConfig, classifier_task, train_classifier
from loupe.training.loop import Task, fit, train
from loupe.training.recipe import Recipe
from loupe.training.segmentation import (
    SegmentationConfig,
    evaluate_segmenter,
    predict_masks,
    segmentation_task,
    train_segmenter,
)
from loupe.training.transforms import Augmentation

__all__ = [
    "Augmentation",
    "ClassifierConfig",
    "Recipe",
    "SegmentationConfig",
    "Task",
    "classifier_task",
    "evaluate_segmenter",
    "fit",
    "predict_masks",
    "segmentation_task",
    "train",
    "train_classifier",
    "train_segmenter",
]
