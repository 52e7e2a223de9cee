"""Torchvision segmentation and detection models by name (``deeplabv3_resnet50``, ``fcn_*``,
``lraspp_*``; ``fasterrcnn_*``, ``retinanet_*``, ``fcos_*``, ``maskrcnn_*``, ``ssd*``), with
the same weights as classifiers: an enum name, a state-dict file, or ``"random"`` (seeded, no
backbone weights: nothing is downloaded).

What each brings: the network in eval mode, its number of classes (the last weight of a
detector does not say it), class names (an enum's categories), and its input preprocessing as a
:class:`~loupe.models.preprocessing.Preprocessing` whose ``resize`` is the shorter side the model
works at (segmentation: the enum's ``resize_size``, 520; detection: the detector's own
``transform.min_size``, with mean 0 and std 1 because torchvision's detectors normalise inside).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from loupe.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from loupe.models.weights import describe_mismatch, read_state_dict
from loupe.models.zoo import pretrained_model

CLASSIFICATION, SEGMENTATION, DETECTION = "classification", "segmentation", "detection"
#: torchvision's default number of classes (COCO with VOC labels; COCO with N/A gaps).
DEFAULT_CLASSES = {SEGMENTATION: 21, DETECTION: 91}
#: Shorter side of torchvision's segmentation presets (``SemanticSegmentation(resize_size=520)``).
SEGMENTATION_SIDE = 520
#: State-dict keys whose rows are the classes, for reading the count from a file.
CLASS_KEYS = ("classifier.4.weight", "classifier.high_classifier.weight",
              "roi_heads.box_predictor.cls_score.weight")


@cache
def _task_names() -> dict[str, str]:
    found = {}
    for task, module in ((SEGMENTATION, torchvision.models.segmentation),
                         (DETECTION, torchvision.models.detection)):
        found.update(dict.fromkeys(torchvision.models.list_models(module=module), task))
    return found


def model_task(name: str) -> str:
    """``"segmentation"`` or ``"detection"`` for torchvision's dense models, else
    ``"classification"`` (the name is checked where the model is built)."""
    return _task_names().get(name, CLASSIFICATION)


@dataclass(frozen=True)
class DenseModel:
    """A loaded segmentation or detection model: see the module docstring."""

    network: nn.Module
    task: str
    num_classes: int
    class_names: tuple[str, ...] | None
    preprocessing: Preprocessing
    source: str


def load_dense_model(name: str, weights: str, num_classes: int | None = None,
                     seed: int = 0) -> DenseModel:
    """``name`` with ``weights`` (enum name, state-dict file or ``"random"``); errors are one
    line naming the argument or file."""
    task = model_task(name)
    if task == CLASSIFICATION:
        raise ValueError(f"--model {name} is not a torchvision segmentation or detection model")
    enum = None if Path(weights).is_file() else _weights_enum(name, weights)
    if enum is not None:
        network = pretrained_model(name, enum)
        names = tuple(enum.meta.get("categories") or ()) or None
        source = f"{type(enum).__name__}.{enum.name}"
        count = len(names) if names else num_classes or DEFAULT_CLASSES[task]
    elif weights.lower() == "random":
        count = num_classes or DEFAULT_CLASSES[task]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = _build(name, count)
        names, source = _default_names(name, count), f"random (seed {seed})"
    elif Path(weights).is_file() or os.sep in weights or Path(weights).suffix:
        network, count = _from_state_dict(name, Path(weights), num_classes, task)
        names, source = _default_names(name, count), str(weights)
    else:
        choices = ", ".join(torchvision.models.get_model_weights(name).__members__) or "none"
        raise ValueError(f"--weights {weights!r} is neither a file nor a weight name for "
                         f"{name} (torchvision has: {choices}; or 'random')")
    network = network.eval()
    return DenseModel(network, task, count, names, _own_preprocessing(network, task, enum),
                      source)


def _weights_enum(name: str, weights: str) -> WeightsEnum | None:
    try:
        return torchvision.models.get_model_weights(name).verify(weights)
    except (KeyError, ValueError, TypeError):
        return None


def _default_names(name: str, count: int) -> tuple[str, ...] | None:
    """The categories of the model's default weights (offline metadata) when they are
    ``count``: random or state-dict weights of the usual head get the usual names."""
    names = tuple(torchvision.models.get_model_weights(name).DEFAULT.meta.get("categories") or ())
    return names if len(names) == count else None


def _build(name: str, num_classes: int, aux_loss: bool = False) -> nn.Module:
    options: dict[str, object] = {"weights": None, "weights_backbone": None,
                                  "num_classes": num_classes}
    if aux_loss:
        options["aux_loss"] = True
    return torchvision.models.get_model(name, **options)


def _from_state_dict(name: str, path: Path, num_classes: int | None, task: str
                     ) -> tuple[nn.Module, int]:
    state = read_state_dict(path)
    found = next((state[k].shape[0] for k in CLASS_KEYS if k in state), None)
    count = num_classes or found or DEFAULT_CLASSES[task]
    network = _build(name, count, aux_loss=any(k.startswith("aux_classifier.") for k in state))
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        hint = "" if num_classes else " (pass --num-classes if the file has another count)"
        raise ValueError(describe_mismatch(path, name, network, state) + hint) from error
    return network, count


def _own_preprocessing(network: nn.Module, task: str, enum: WeightsEnum | None
                       ) -> Preprocessing:
    if task == DETECTION:
        side = int(network.transform.min_size[-1])
        return Preprocessing(size=side, resize=side, mean=(0.0,) * 3, std=(1.0,) * 3)
    if enum is not None:
        transform = enum.transforms()
        side = int(transform.resize_size[0]) if transform.resize_size else SEGMENTATION_SIDE
        return Preprocessing(size=side, resize=side, mean=tuple(transform.mean),
                             std=tuple(transform.std), interpolation=transform.interpolation)
    return Preprocessing(size=SEGMENTATION_SIDE, resize=SEGMENTATION_SIDE, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD)


def fit_detector(network: nn.Module, side: int) -> None:
    """Make a torchvision detector work at shorter side ``side`` (its ``transform.min_size``),
    so that an input of that side is not resized again inside the model."""
    transform = getattr(network, "transform", None)
    if transform is not None and hasattr(transform, "min_size"):
        transform.min_size = (int(side),)
        transform.max_size = max(int(transform.max_size), int(side))
