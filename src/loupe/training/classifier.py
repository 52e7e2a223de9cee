"""Multi-label classifier training for WSSS (:func:`train_classifier`): the classifier task of
the one training loop (:mod:`loupe.training.loop`), validation mAP.

The model is :func:`loupe.models.build_classifier` (IRN's for ResNets). Loss: binary
cross-entropy on image-level labels. For segmentation sets (class 0 = background, never a
label) the classifier has one output per object class: output ``k`` is data-set class
``k + label_offset`` (recorded in ``model.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from loupe.data import has_background, open_split
from loupe.metrics.classification import average_precision, mean_average_precision
from loupe.models.networks import build_classifier, classifier_head
from loupe.training.loop import Task, autocast, loader, train
from loupe.training.parallel import gathered_rows, shard_of
from loupe.training.recipe import Recipe
from loupe.training.transforms import Transformed, augment, image_tensor, resize_and_pad


@dataclass
class ClassifierConfig(Recipe):
    """Everything :func:`train_classifier` does: the :class:`Recipe` (defaults: IRN on VOC,
    ResNet-50 with output stride 16, 5 epochs) and the classifier's model options.

    head, output_stride, pool: see :func:`loupe.models.build_classifier` (``pool``: ``"gap"``
    or ``"gmp"``, the CAM paper's global average or max pooling).
    eval_size: side of the (padded) validation input; default ``crop`` (512 without crop).
    freeze_bn, freeze_stem: None = on when the backbone starts from trained weights (IRN keeps
    BatchNorm statistics and stage 1 fixed), off for random initialisation.
    shuffle_augment: probability that a training image is tile-shuffled after the other
    augmentations, as shuffle saliency shuffles its inputs (``Augmentation.shuffle``).
    """

    out: str = "runs/classifier"
    head: str = "auto"
    output_stride: int = 16
    pool: str = "gap"
    eval_size: int | None = None
    freeze_bn: bool | None = None
    freeze_stem: bool | None = None
    shuffle_augment: float = 0.0

    def check(self) -> None:
        """A ValueError naming the first option out of range."""
        super().check()
        if not 0 <= self.shuffle_augment <= 1:
            raise ValueError(f"--shuffle-augment must lie in [0, 1], got {self.shuffle_augment}")


def train_classifier(config: ClassifierConfig) -> Path:
    """Train (or, with ``config.resume``, continue) a classifier; returns ``out/model.pt``.

    Per epoch: one pass of the augmented training split, validation mAP on ``val_split``,
    then the run folder (see :func:`loupe.training.loop.train`, also for ``torchrun``:
    validation is sharded and all-reduced)."""
    return train(config, classifier_task)


def classifier_task(config: ClassifierConfig, device: torch.device) -> Task:
    """The classifier :class:`~loupe.training.loop.Task` of ``config``: the model (seeded), its
    augmented training items ``(image, labels)`` and validation by mAP."""
    train_set = open_split(config.dataset, config.root, config.train_split,
                           config.synthetic, config.data_options)
    val_set = (open_split(config.dataset, config.root, config.val_split, config.synthetic,
                          config.data_options)
               if config.val_split else None)
    class_names = list(train_set.class_names)
    offset = 1 if has_background(class_names) else 0
    num_outputs = len(class_names) - offset
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(config.seed)
        model = build_classifier(config.backbone, num_outputs, head=config.head,
                                 output_stride=config.output_stride,
                                 pretrained=config.pretrained, init=config.init,
                                 pool=config.pool).to(device)
    trained_init = config.pretrained == "imagenet" or config.init is not None
    if trained_init if config.freeze_stem is None else config.freeze_stem:
        freeze_stem(model)
    preprocessing = config.preprocessing
    augmentation = replace(config.augmentation, shuffle=config.shuffle_augment)
    eval_size = config.eval_size or config.crop or 512

    def train_item(sample: Any, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image, _ = augment(image_tensor(sample.image), None, augmentation, preprocessing, g)
        return image, sample.labels[offset:]

    def val_item(sample: Any, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image = preprocessing(image_tensor(sample.image))
        return resize_and_pad(image, eval_size), sample.labels[offset:]

    spec = {
        "kind": "classifier",
        "model": {"backbone": config.backbone, "num_classes": num_outputs,
                  "head": config.head, "output_stride": config.output_stride,
                  "pool": config.pool},
        "preprocessing": preprocessing.to_json(),
        "class_names": class_names[offset:],
        "label_offset": offset,
        "input_size": eval_size,
        "config": config.to_json(),
    }
    validate = None if val_set is None else _validation(
        Transformed(val_set, val_item, config.seed), num_outputs, device, config.workers)
    return Task(model, classifier_head(model), Transformed(train_set, train_item, config.seed),
                F.binary_cross_entropy_with_logits, spec,
                freeze_bn=trained_init if config.freeze_bn is None else config.freeze_bn,
                validate=validate, score=("val_map", "val mAP"))


def _validation(val_data: Any, num_outputs: int, device: torch.device, workers: int) -> Any:
    """``validate(model, batch_size, amp)``: mAP and per-class AP on ``val_data``."""

    def validate(model: nn.Module, batch_size: int, amp: bool) -> dict[str, Any]:
        scores, labels = validation_scores(model, val_data, num_outputs, batch_size, device,
                                           amp, workers)
        ap = average_precision(scores, labels)
        return {"val_map": mean_average_precision(scores, labels),
                "val_ap": [None if math.isnan(v) else v for v in ap.tolist()]}

    return validate


def freeze_stem(model: nn.Module) -> list[str]:
    """Freeze IRN's stage 1 of a ResNet (``conv1``, ``bn1``, ``layer1``); returns what was
    frozen (nothing for other models)."""
    names = [n for n in ("conv1", "bn1", "layer1") if hasattr(model, n)]
    if len(names) < 3:
        return []
    for name in names:
        for parameter in getattr(model, name).parameters():
            parameter.requires_grad_(False)
    return names


@torch.no_grad()
def predict_scores(
    model: nn.Module, batches: Any, device: torch.device, amp: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid scores and labels ``(N, C)`` over ``(images, labels)`` batches, model in eval."""
    was_training = model.training
    model.eval()
    scores, labels = [], []
    try:
        for images, targets in batches:
            with autocast(device, amp):
                logits = model(images.to(device))
            scores.append(torch.sigmoid(logits.float()).cpu())
            labels.append(targets)
    finally:
        model.train(was_training)
    return torch.cat(scores), torch.cat(labels)



def validation_scores(
    model: nn.Module, val_data: Any, num_outputs: int, batch_size: int, device: torch.device,
    amp: bool, workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid scores and labels ``(N, C)`` of every item of ``val_data`` (``(image,
    labels)`` pairs), in order, on every rank: under ``torchrun`` each rank scores its shard
    (:func:`~loupe.training.parallel.shard_of`) and the rows are all-reduced. ``model`` is
    the bare network (not the DDP wrapper)."""
    part = shard_of(val_data)
    if len(part):
        scores, labels = predict_scores(
            model, loader(part, batch_size, shuffle=False, seed=0, epoch=0, workers=workers),
            device, amp)
    else:  # more ranks than validation images
        scores = labels = torch.zeros(0, num_outputs)
    total = len(val_data)
    return gathered_rows(scores.float(), total), gathered_rows(labels.float(), total)
