"""Models: torchvision and timm classifiers and their weights, loupe's own networks, the input
preprocessing, model files of a run folder, and the one loader, :func:`load_classifier`."""

from loupe.models.loader import Classifier, load_classifier, read_labels
from loupe.models.networks import (
    SmallGAPNet,
    build_classifier,
    build_segmenter,
    classifier_head,
    load_backbone_weights,
)
from loupe.models.preprocessing import (
    Preprocessing,
    PreprocessingOptions,
    mean_std_from_scale,
    preprocessing_from_options,
    preprocessing_from_weights,
)
from loupe.models.runs import is_training_run, load_model, preprocessing_of, save_model
from loupe.models.weights import num_outputs, read_state_dict
from loupe.models.zoo import (
    apply_patch,
    check_model_name,
    model_from_state_dict,
    model_names,
    pretrained_model,
    random_model,
    weight_names,
    weights_enum,
)

__all__ = [
    "Classifier",
    "Preprocessing",
    "PreprocessingOptions",
    "SmallGAPNet",
    "apply_patch",
    "build_classifier",
    "build_segmenter",
    "check_model_name",
    "classifier_head",
    "is_training_run",
    "load_backbone_weights",
    "load_classifier",
    "load_model",
    "mean_std_from_scale",
    "model_from_state_dict",
    "model_names",
    "num_outputs",
    "preprocessing_from_options",
    "preprocessing_from_weights",
    "preprocessing_of",
    "pretrained_model",
    "random_model",
    "read_labels",
    "read_state_dict",
    "save_model",
    "weight_names",
    "weights_enum",
]
