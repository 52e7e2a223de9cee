"""Segmentation from pseudo-masks (:func:`train_segmenter`): DeepLabV3 trained on mask PNGs,
the segmentation task of the one training loop (:mod:`loupe.training.loop`), evaluated on
ground truth.

The last step of the WSSS pipeline: pseudo-masks (``<id>.png``, class indices, 255 = ignore,
e.g. from ``loupe masks``) of the training images supervise torchvision's DeepLabV3
(:func:`loupe.models.build_segmenter`) with a ResNet-50 or MobileNetV3-Large backbone;
per-pixel cross-entropy ignores 255. Validation mIoU is measured on the validation split's
ground-truth masks (VOC protocol, :mod:`loupe.metrics`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from loupe import distributed
from loupe.data import open_split
from loupe.data.base import IGNORE_INDEX, read_index_mask
from loupe.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou
from loupe.models.networks import build_segmenter
from loupe.models.preprocessing import Preprocessing
from loupe.training.loop import Task, autocast, train
from loupe.training.parallel import shard_of
from loupe.training.recipe import Recipe
from loupe.training.transforms import Transformed, augment, image_tensor

logger = logging.getLogger(__name__)


@dataclass
class SegmentationConfig(Recipe):
    """Everything :func:`train_segmenter` does: the :class:`Recipe` (defaults:
    DeepLabV3-ResNet-50 from ImageNet, 20 epochs) and the segmenter's options.

    masks: the folder of pseudo-masks of ``train_split`` (required).
    freeze_bn: fixed BatchNorm statistics. bn_momentum: overrides every BatchNorm's
    running-statistics momentum (torchvision's MobileNetV3 uses 0.01, too slow for runs of a
    few hundred steps from scratch: evaluation then sees untrained statistics); None keeps the
    backbone's own. precise_bn > 0: recompute the BatchNorm statistics on that many training
    batches after each epoch, before validation and saving
    (:func:`loupe.training.loop.recompute_bn_statistics`).
    """

    epochs: int = 20
    out: str = "runs/segmentation"
    masks: str = ""
    freeze_bn: bool = False
    bn_momentum: float | None = None
    precise_bn: int = 0


def train_segmenter(config: SegmentationConfig) -> Path:
    """Train (or resume) DeepLabV3 on pseudo-masks; returns ``out/model.pt``. Per epoch:
    training pass, (precise BatchNorm), validation mIoU on ``val_split`` ground truth, then the
    run folder (see :func:`loupe.training.loop.train`, also for ``torchrun``: precise
    BatchNorm runs on every rank and the statistics are averaged, the validation confusion
    matrix is summed over shards)."""
    if not config.masks:
        raise ValueError("--masks is required: the folder of pseudo-mask PNGs")
    return train(config, segmentation_task)


def segmentation_task(config: SegmentationConfig, device: torch.device) -> Task:
    """The segmentation :class:`~loupe.training.loop.Task` of ``config``: DeepLabV3 (seeded),
    augmented training items ``(image, pseudo-mask)`` and validation by mIoU."""
    base = open_split(config.dataset, config.root, config.train_split, config.synthetic,
                      config.data_options)
    train_set = PseudoMaskDataset(base, config.masks)
    val_set = (open_split(config.dataset, config.root, config.val_split, config.synthetic,
                          config.data_options)
               if config.val_split else None)
    class_names = list(base.class_names)
    num_classes = len(class_names)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_segmenter(config.backbone, num_classes, pretrained=config.pretrained,
                                init=config.init).to(device)
    if config.bn_momentum is not None:
        set_bn_momentum(model, config.bn_momentum)
    preprocessing, augmentation = config.preprocessing, config.augmentation

    def train_item(sample: Any, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(image_tensor(sample.image), sample.mask, augmentation, preprocessing, g)

    spec = {
        "kind": "segmenter",
        "model": {"backbone": config.backbone, "num_classes": num_classes},
        "preprocessing": preprocessing.to_json(),
        "class_names": class_names,
        "label_offset": 0,
        "config": config.to_json(),
    }
    validate = None if val_set is None else _validation(val_set, preprocessing, device,
                                                        num_classes)
    return Task(model, "classifier", Transformed(train_set, train_item, config.seed),
                _cross_entropy, spec, freeze_bn=config.freeze_bn,
                precise_bn=0 if config.freeze_bn else max(config.precise_bn, 0),
                validate=validate, score=("val_miou", "val mIoU"))


def _cross_entropy(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)


def _validation(val_set: Any, preprocessing: Preprocessing, device: torch.device,
                num_classes: int) -> Any:
    """``validate(model, batch_size, amp)``: mIoU and per-class IoU on ``val_set``'s ground
    truth, the confusion matrix summed over the ranks' shards."""

    def validate(model: nn.Module, batch_size: int, amp: bool) -> dict[str, Any]:
        confusion = distributed.all_reduce_sum(evaluate_segmenter(
            model, shard_of(val_set), preprocessing, device, num_classes,
            batch_size=batch_size, amp=amp))
        return {"val_miou": float(mean_iou(confusion)),
                "val_iou": [None if v != v else float(v) for v in iou_per_class(confusion)]}

    return validate


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm of ``model``."""
    if not 0 < momentum <= 1:
        raise ValueError(f"bn_momentum must be in (0, 1], got {momentum}")
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


class PseudoMaskDataset(Dataset):
    """Images of a data set paired with pseudo-masks ``masks_dir/<id>.png`` (index PNGs).

    Only ids with a mask file are kept (a warning says how many have none); a ValueError when
    none has. Items are Samples whose ``mask`` is the pseudo-mask."""

    def __init__(self, base: Any, masks_dir: str | Path) -> None:
        folder = Path(masks_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--masks {folder}: folder not found")
        self.base = base
        self.folder = folder
        self.num_classes = len(base.class_names)
        self.indices = [i for i, name in enumerate(base.ids) if (folder / f"{name}.png").is_file()]
        if not self.indices:
            example = f"{base.ids[0]}.png" if len(base.ids) else "<id>.png"
            raise ValueError(f"--masks {folder}: no pseudo-mask for any of the {len(base.ids)} "
                             f"training images (expected files like {example})")
        if len(self.indices) < len(base.ids):
            logger.warning("%s: %d of %d training images have no pseudo-mask and are skipped",
                           folder, len(base.ids) - len(self.indices), len(base.ids))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        sample = self.base[self.indices[index]]
        path = self.folder / f"{sample.id}.png"
        mask = read_index_mask(path, self.num_classes)
        width, height = sample.image.size
        if tuple(mask.shape) != (height, width):
            raise ValueError(f"{path}: pseudo-mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
                             f"image {sample.id!r} is {width}x{height}")
        sample.mask = mask
        return sample


@torch.no_grad()
def predict_masks(model: nn.Module, images: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """Argmax labels ``(B, H, W)`` long of normalised ``images`` ``(B, 3, H, W)``, on their
    device (the model must be on it and in eval mode)."""
    with autocast(images.device, amp):
        output = model(images)
    logits = output["out"] if isinstance(output, dict) else output
    if logits.shape[-2:] != images.shape[-2:]:
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
    return logits.argmax(1)


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module, dataset: Any, preprocessing: Preprocessing, device: torch.device,
    num_classes: int, *, batch_size: int = 8, amp: bool = False,
) -> torch.Tensor:
    """The summed ``(N, N)`` confusion matrix of the model's masks against the ground truth
    of every sample of ``dataset`` (full resolution; images of equal size are batched)."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        images = torch.stack([p[0] for p in pending]).to(device)
        gts = torch.stack([p[1] for p in pending]).to(device)
        pred = predict_masks(model, preprocessing(images), amp)
        confusion.add_(confusion_matrix(pred, gts, num_classes).sum(0))
        pending.clear()

    try:
        for index in range(len(dataset)):
            sample = dataset[index]
            if sample.mask is None:
                raise ValueError(f"validation image {sample.id!r} has no ground-truth mask")
            item = (image_tensor(sample.image), sample.mask)
            if pending and (item[0].shape != pending[0][0].shape or len(pending) >= batch_size):
                flush()
            pending.append(item)
        if pending:
            flush()
    finally:
        model.train(was_training)
    return confusion.cpu()
