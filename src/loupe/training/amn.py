"""AMN training (:func:`train_amn`): the activation manipulation network of Lee, Kim and Shim
(CVPR 2022) trained on the confident pseudo-labels of a classifier's CAMs, a task of the one
training loop (:mod:`loupe.training.loop`).

The paper's step 2 (``step/train_amn.py``): the classifier's maps become confident labels
(``loupe maps`` then ``loupe masks --confident FG BG``: the label where the best
max-normalised map is at least FG, background below BG, 255 = ignore between), and the
network (:mod:`loupe.models.amn`), given each image's image-level labels, learns them with
the per-pixel loss :func:`amn_loss`. The recipe's defaults are the authors': Adam (weight
decay 1e-4) at 5e-6 for the backbone and 1e-4 (20x) for the label encoder and ASPP, constant
learning rates, 5 epochs, batch 16, random rescale 0.5-1.5, flip, crop 512, no colour
jitter, frozen BatchNorm statistics and first convolution, ``eps = 0.4``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from loupe import distributed
from loupe.data import open_split
from loupe.data.base import IGNORE_INDEX
from loupe.io import read_json
from loupe.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou
from loupe.models.amn import (
    AMN_DROPOUT,
    AMN_RATES,
    AMNModel,
    AMNNetwork,
    amn_spec,
    backbone_features,
    feature_channels,
)
from loupe.models.networks import build_classifier
from loupe.models.preprocessing import Preprocessing
from loupe.models.runs import load_model, preprocessing_of
from loupe.training.loop import Task, autocast, train
from loupe.training.parallel import shard_of
from loupe.training.recipe import Recipe
from loupe.training.segmentation import PseudoMaskDataset
from loupe.training.transforms import Augmentation, Transformed, augment, image_tensor

logger = logging.getLogger(__name__)


@dataclass
class AMNConfig(Recipe):
    """Everything :func:`train_amn` does: the :class:`Recipe` with the authors' defaults
    (``train_amn.py``) and AMN's options.

    classifier: the classifier run (``loupe train``) whose maps made the labels; its
        architecture, input normalisation and class names are the network's.
    masks: the folder of confident labels ``<id>.png`` of ``train_split`` (``loupe masks
        --confident FG BG``; 0 background, 255 ignored).
    pretrained: where the backbone starts: ``"classifier"`` (the classifier's backbone
        weights, offline), ``"imagenet"`` (the paper's; torchvision download, or ``init``),
        ``"none"``.
    eps: label smoothing of :func:`amn_loss`. rates, dropout: the ASPP head's.
    rescale: random scale factor range (the authors' 0.5-1.5).
    freeze_bn: fixed BatchNorm statistics (IRN's FixedBatchNorm, on in the authors' code).
    freeze_stem: the backbone's first convolution and BatchNorm frozen (the authors freeze
        ResNet's ``conv1``/``bn1``).
    Adam ignores ``momentum``; ``poly_power = 0`` keeps the learning rates constant.
    """

    out: str = "runs/amn"
    classifier: str = ""
    masks: str = ""
    pretrained: str = "classifier"
    eps: float = 0.4
    rates: tuple[int, ...] = AMN_RATES
    dropout: float = AMN_DROPOUT
    freeze_bn: bool = True
    freeze_stem: bool = True
    epochs: int = 5
    lr: float = 5e-6
    head_lr_mult: float = 20.0
    poly_power: float = 0.0
    resize_long: tuple[int, int] | None = None
    rescale: tuple[float, float] | None = (0.5, 1.5)
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(resize_long=self.resize_long, flip=self.flip, jitter=self.jitter,
                            crop=self.crop, rescale=self.rescale)

    def check(self) -> None:
        """A ValueError naming the first option out of range."""
        super().check()
        if not self.classifier:
            raise ValueError("--classifier is required: the classifier run whose maps made "
                             "the labels")
        if not self.masks:
            raise ValueError("--masks is required: the folder of confident labels")
        if not 0 <= self.eps < 1:
            raise ValueError(f"--eps must be in [0, 1), got {self.eps}")
        if self.pretrained not in ("classifier", "imagenet", "none"):
            raise ValueError(f"--pretrained must be classifier, imagenet or none, "
                             f"got {self.pretrained!r}")
        if not self.rates or any(r < 1 for r in self.rates):
            raise ValueError(f"--rates must be positive dilations, got {list(self.rates)}")
        if self.rescale is not None and not 0 < self.rescale[0] <= self.rescale[1]:
            raise ValueError(f"--rescale needs 0 < MIN <= MAX, got {list(self.rescale)}")


def train_amn(config: AMNConfig) -> Path:
    """Train (or, with ``config.resume``, continue) AMN; returns ``out/model.pt``, an
    :class:`~loupe.models.AMNModel` run (the network and the classifier). Per epoch: one
    pass, validation mIoU on ``val_split`` (the network's argmax over background and the
    image's labels, the authors' check), the run folder (:func:`loupe.training.loop.train`,
    also for ``torchrun``)."""
    config.check()
    return train(config, amn_task)


# --------------------------------------------------------------------------- the loss


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W)`` label maps at ``size`` by nearest neighbour at pixel centres (PIL's
    ``NEAREST``, which the authors use; ``F.interpolate``'s ``"nearest-exact"``)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return resized[:, 0].long()


def amn_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 0.4) -> torch.Tensor:
    """AMN's per-pixel classification loss (the authors' ``balanced_cross_entropy``).

    Cross-entropy against label-smoothed targets ``q_c = 1 - eps`` at the pixel's label and
    ``eps / (C - 1)`` elsewhere, ``l = -sum_c q_c log softmax(z)_c``, averaged separately over
    the background pixels (label 0) and the foreground pixels (1..C-1) of the whole batch:
    ``L = (mean_bg l + mean_fg l) / 2``. Pixels labelled 255 are ignored. When the batch has
    no foreground (or no background) pixel the other mean is the loss (the authors' code
    divides by zero there); with neither, 0.

    Args:
        logits: ``(B, C, h, w)``, channel 0 = background.
        labels: ``(B, H, W)`` long in ``0..C-1`` or 255, resized to ``(h, w)`` by
            :func:`downsample_labels` (the authors resize labels, not logits).
        eps: label smoothing in [0, 1).
    """
    labels = downsample_labels(labels.to(logits.device), tuple(logits.shape[-2:]))
    num_channels = logits.shape[1]
    valid = labels != IGNORE_INDEX
    if bool((labels[valid] >= num_channels).any()) or bool((labels < 0).any()):
        raise ValueError(f"labels must be in 0..{num_channels - 1} or {IGNORE_INDEX}, got "
                         f"{sorted(set(labels[valid].unique().tolist()))}")
    log_p = F.log_softmax(logits.float(), dim=1)
    target = labels.where(valid, 0)
    picked = log_p.gather(1, target[:, None])[:, 0]
    others = log_p.sum(1) - picked
    per_pixel = -(1 - eps) * picked - eps / (num_channels - 1) * others
    terms = [per_pixel[region].mean() for region in (valid & (target == 0),
                                                     valid & (target > 0)) if region.any()]
    if not terms:
        return per_pixel.sum() * 0.0
    return torch.stack(terms).mean()


# --------------------------------------------------------------------------- the task


def amn_task(config: AMNConfig, device: torch.device) -> Task:
    """The AMN :class:`~loupe.training.loop.Task`: the network (seeded head, backbone from
    ``config.pretrained``) bundled with the frozen classifier, training items ``((image,
    labels), confident label map)``, :func:`amn_loss`, Adam, validation mIoU."""
    classifier, classifier_spec = _classifier(config)
    base = open_split(config.dataset, config.root, config.train_split, config.synthetic,
                      config.data_options)
    _check_classes(config, classifier_spec, list(base.class_names))
    _check_masks_folder(Path(config.masks))
    model = _amn_model(config, classifier, classifier_spec).to(device)
    spec = _spec(config, classifier_spec, model)
    preprocessing, augmentation = preprocessing_of(classifier_spec), config.augmentation

    def train_item(sample: Any, g: torch.Generator) -> tuple[Any, torch.Tensor]:
        image, mask = augment(image_tensor(sample.image), sample.mask, augmentation,
                              preprocessing, g)
        return (image, sample.labels[1:].float()), mask

    val_set = (open_split(config.dataset, config.root, config.val_split, config.synthetic,
                          config.data_options) if config.val_split else None)
    validate = None if val_set is None else _validation(val_set, preprocessing, device)
    eps = config.eps

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return amn_loss(logits, labels, eps)

    def adam(groups: tuple[list[nn.Parameter], list[nn.Parameter]]) -> torch.optim.Adam:
        backbone, head = groups
        param_groups = [{"params": head, "lr": config.lr * config.head_lr_mult}]
        if backbone:
            param_groups.insert(0, {"params": backbone, "lr": config.lr})
        return torch.optim.Adam(param_groups, lr=config.lr, weight_decay=config.weight_decay)

    return Task(model, "network.head", Transformed(PseudoMaskDataset(base, config.masks),
                                                   train_item, config.seed),
                loss, spec, freeze_bn=config.freeze_bn, validate=validate,
                score=("val_miou", "val mIoU"), optimizer=adam)


def _classifier(config: AMNConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The classifier run's model (frozen) and ``model.json``; errors name ``--classifier``."""
    path = Path(config.classifier)
    if not (path / "model.json").is_file() and not path.with_suffix(".json").is_file():
        raise FileNotFoundError(f"--classifier {path}: not a loupe classifier run (no "
                                "model.json)")
    model, spec = load_model(path)
    if spec.get("kind") != "classifier":
        raise ValueError(f"--classifier {path}: a {spec.get('kind')!r} run, not a classifier")
    if int(spec.get("label_offset", 0)) != 1:
        raise ValueError(f"--classifier {path}: AMN needs a data set whose class 0 is the "
                         "background (label_offset 1 in model.json)")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, spec


def _check_classes(config: AMNConfig, spec: dict[str, Any], names: list[str]) -> None:
    if list(spec["class_names"]) != names[1:]:
        raise ValueError(f"--classifier {config.classifier}: its {len(spec['class_names'])} "
                         f"classes are not the data set's {len(names) - 1} object classes")


def _check_masks_folder(folder: Path) -> None:
    """A warning when ``masks.json`` says the labels are not confident ones (no 255 band)."""
    description = folder / "masks.json"
    if description.is_file():
        recorded = read_json(description, "masks run description (masks.json)")
        if isinstance(recorded, dict) and not recorded.get("confident"):
            logger.warning("%s: made without --confident FG BG; AMN expects confident labels "
                           "with an ignored band (255)", folder)


def _amn_model(config: AMNConfig, classifier: nn.Module, spec: dict[str, Any]) -> AMNModel:
    """The network (head seeded by ``config.seed``) and the classifier, bundled."""
    if config.pretrained == "classifier":
        start = copy.deepcopy(classifier)
    else:
        arguments = {**spec["model"], "pretrained": config.pretrained, "init": config.init}
        start = build_classifier(**arguments)
    backbone = backbone_features(start)
    for parameter in backbone.parameters():
        parameter.requires_grad_(True)
    channels = feature_channels(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        network = AMNNetwork(backbone, channels, int(spec["model"]["num_classes"]),
                             config.rates, config.dropout)
    if config.freeze_stem:
        freeze_first_conv(backbone)
    return AMNModel(network, classifier)


def freeze_first_conv(backbone: nn.Module) -> list[str]:
    """Freeze the first convolution and the first BatchNorm of ``backbone`` (the authors
    freeze ResNet-50's ``conv1`` and ``bn1``); returns their names."""
    frozen = []
    for kind in (nn.Conv2d, nn.modules.batchnorm._BatchNorm):
        for name, module in backbone.named_modules():
            if isinstance(module, kind):
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
                frozen.append(name)
                break
    return frozen


def _spec(config: AMNConfig, classifier_spec: dict[str, Any], model: AMNModel) -> dict:
    network = model.network
    return {
        "kind": "amn",
        "model": amn_spec(classifier_spec["model"], network.head.label_encoder.out_features,
                          config.rates, config.dropout),
        "preprocessing": classifier_spec["preprocessing"],
        "class_names": list(classifier_spec["class_names"]),
        "label_offset": 1,
        "input_size": classifier_spec.get("input_size"),
        "classifier": str(config.classifier),
        "masks": str(config.masks),
        # the network's architecture and normalisation are the classifier's, not the
        # Recipe's defaults
        "config": {**config.to_json(), "backbone": classifier_spec["model"].get("backbone"),
                   **classifier_spec["preprocessing"]},
    }


# --------------------------------------------------------------------------- validation


def _validation(val_set: Any, preprocessing: Preprocessing, device: torch.device) -> Any:
    """``validate(model, batch_size, amp)``: mIoU of the network's argmax over background
    and each image's labels against the ground truth, summed over the ranks' shards."""
    num_classes = len(val_set.class_names)

    def validate(model: nn.Module, batch_size: int, amp: bool) -> dict[str, Any]:
        confusion = distributed.all_reduce_sum(evaluate_amn(
            model, shard_of(val_set), preprocessing, device, num_classes, amp=amp))
        return {"val_miou": float(mean_iou(confusion)),
                "val_iou": [None if v != v else float(v) for v in iou_per_class(confusion)]}

    return validate


@torch.no_grad()
def evaluate_amn(model: nn.Module, dataset: Any, preprocessing: Preprocessing,
                 device: torch.device, num_classes: int, *, amp: bool = False) -> torch.Tensor:
    """The ``(N, N)`` confusion matrix of AMN's own segmentation (per pixel, the argmax of the
    softmax over background and the image's labels, at full resolution) against the ground
    truth of every sample of ``dataset``, one image at a time."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    try:
        for index in range(len(dataset)):
            sample = dataset[index]
            if sample.mask is None:
                raise ValueError(f"validation image {sample.id!r} has no ground-truth mask")
            x = preprocessing(image_tensor(sample.image))[None].to(device)
            labels = sample.labels[1:].float()[None].to(device)
            with autocast(device, amp):
                logits = model(x, labels)
            logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear",
                                   align_corners=False)
            allowed = torch.cat([labels.new_ones(1, 1), labels], 1) > 0
            scores = logits.masked_fill(~allowed[..., None, None], float("-inf"))
            confusion += confusion_matrix(scores.argmax(1)[0].cpu(), sample.mask,
                                          num_classes)
    finally:
        model.train(was_training)
    return confusion
