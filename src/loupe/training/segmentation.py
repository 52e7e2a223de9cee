"""Segmentation from pseudo-masks: DeepLabV3 trained on mask PNGs, evaluated on ground truth.

The last step of the WSSS pipeline: pseudo-masks (``<id>.png``, class indices, 255 = ignore,
e.g. from ``loupe masks``) of the training images supervise torchvision's DeepLabV3 (Chen et
al., "Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv 1706.05587) with a
ResNet-50 or MobileNetV3-Large backbone; per-pixel cross-entropy ignores 255. Validation mIoU
is measured on the validation split's ground-truth masks (VOC protocol, :mod:`loupe.metrics`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import Dataset

from loupe.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou
from loupe.pipeline import distributed
from loupe.training.checkpoints import (
    read_state_dict,
    resume_run,
    save_run,
)
from loupe.training.classifier import OFFLINE_MESSAGE
from loupe.training.common import (
    SyntheticSplits,
    autocast,
    epoch_seed,
    open_split,
    recompute_bn_statistics,
    seeded,
    set_train_mode,
    train_epoch,
)
from loupe.training.parallel import (
    average_buffers,
    bare,
    broadcast_buffers,
    data_parallel,
    launch_training,
    shard_of,
    train_loader,
)
from loupe.training.schedules import poly_schedule, sgd_with_head_lr, split_parameters
from loupe.training.transforms import (
    IGNORE_INDEX,
    Augmentation,
    Preprocessing,
    Transformed,
    augment,
    image_tensor,
)

logger = logging.getLogger(__name__)

SEGMENTER_BACKBONES = {
    "resnet50": ("deeplabv3_resnet50", "ResNet50_Weights"),
    "mobilenet_v3_large": ("deeplabv3_mobilenet_v3_large", "MobileNet_V3_Large_Weights"),
}


def build_segmenter(
    backbone: str, num_classes: int, *, pretrained: str = "none", init: str | None = None
) -> nn.Module:
    """torchvision DeepLabV3 with ``num_classes`` outputs (background included), no auxiliary
    head. ``pretrained="imagenet"`` starts the backbone from torchvision's ImageNet weights
    (downloaded; a ValueError saying so offline); ``init`` loads a local ImageNet
    *classification* state dict of the same backbone (``resnet50`` / ``mobilenet_v3_large``,
    its classifier is ignored). The model maps ``(B, 3, H, W)`` to ``{"out": (B, N, H, W)}``."""
    if backbone not in SEGMENTER_BACKBONES:
        raise ValueError(f"unknown segmentation backbone {backbone!r}; choose one of: "
                         f"{', '.join(SEGMENTER_BACKBONES)}")
    if pretrained not in ("imagenet", "none"):
        raise ValueError(f"--pretrained must be 'imagenet' or 'none', got {pretrained!r}")
    builder_name, weights_name = SEGMENTER_BACKBONES[backbone]
    builder = getattr(torchvision.models.segmentation, builder_name)
    weights_backbone = None
    if pretrained == "imagenet":
        weights_backbone = getattr(torchvision.models, weights_name).IMAGENET1K_V1
    try:
        model = builder(weights=None, weights_backbone=weights_backbone,
                        num_classes=num_classes, aux_loss=False)
    except (OSError, RuntimeError) as error:
        raise ValueError(f"{OFFLINE_MESSAGE} ({backbone}: {error})") from error
    if init is not None:
        _load_backbone(model, backbone, init)
    return model


def _load_backbone(model: nn.Module, backbone: str, path: str) -> None:
    """Classification weights -> ``model.backbone`` (an IntermediateLayerGetter)."""
    state = read_state_dict(path)
    if backbone == "mobilenet_v3_large":  # the getter wraps ``features``: drop that prefix
        state = {k.removeprefix("features."): v for k, v in state.items()
                 if k.startswith("features.")}
    own = model.backbone.state_dict()
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if missing:
        raise ValueError(f"{path}: not a {backbone} classification state dict (missing or "
                         f"mis-shaped: {missing[:5]})")
    model.backbone.load_state_dict({k: state[k] for k in own})


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
        from loupe.data.base import read_index_mask

        sample = self.base[self.indices[index]]
        path = self.folder / f"{sample.id}.png"
        mask = read_index_mask(path, self.num_classes)
        width, height = sample.image.size
        if tuple(mask.shape) != (height, width):
            raise ValueError(f"{path}: pseudo-mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
                             f"image {sample.id!r} is {width}x{height}")
        sample.mask = mask
        return sample


@dataclass
class SegmentationConfig:
    """Everything :func:`train_segmenter` does. Defaults: DeepLabV3-ResNet-50 from ImageNet,
    SGD momentum 0.9, lr 0.01 (10x on the DeepLab head), weight decay 1e-4, poly decay,
    batch 16, 20 epochs, IRN's augmentation (long side 320..640, flip, jitter, crop 512).
    ``masks`` is the folder of pseudo-masks of ``train_split``. ``bn_momentum`` overrides
    every BatchNorm's running-statistics momentum (torchvision's MobileNetV3 uses 0.01, too
    slow for runs of a few hundred steps from scratch: evaluation then sees untrained
    statistics); None keeps the backbone's own. ``precise_bn`` > 0 recomputes the BatchNorm
    statistics on that many training batches after each epoch, before validation and saving
    (:func:`loupe.training.common.recompute_bn_statistics`)."""

    masks: str = ""
    dataset: str = "voc"
    root: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    synthetic: SyntheticSplits = field(default_factory=SyntheticSplits)
    data_options: dict[str, Any] = field(default_factory=dict)
    backbone: str = "resnet50"
    pretrained: str = "imagenet"
    init: str | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    epochs: int = 20
    batch_size: int = 16
    lr: float = 0.01
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    resize_long: tuple[int, int] | None = (320, 640)
    crop: int | None = 512
    flip: bool = True
    jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    freeze_bn: bool = False
    bn_momentum: float | None = None
    precise_bn: int = 0
    amp: bool = True
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    out: str = "runs/segmentation"
    resume: bool = False
    max_steps_per_epoch: int | None = None
    progress: bool = True


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


def train_segmenter(config: SegmentationConfig) -> Path:
    """Train (or resume) DeepLabV3 on pseudo-masks; returns ``out/model.pt``. Per epoch:
    training pass, validation mIoU on ``val_split`` ground truth, then ``model.pt``,
    ``model.json``, ``checkpoint.pt``, ``history.json`` in ``out``.

    Under ``torchrun`` every process runs this: DistributedDataParallel, ``batch_size`` is the
    global batch, precise BatchNorm runs on every rank and the statistics are averaged, the
    validation confusion matrix is summed over shards, and rank 0 alone writes ``out`` (see
    :mod:`loupe.training.parallel`)."""
    if not config.masks:
        raise ValueError("--masks is required: the folder of pseudo-mask PNGs")
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    return launch_training(config, _train)


def _train(config: SegmentationConfig, device: torch.device, per_rank_batch: int) -> None:
    out = Path(config.out)
    main = distributed.is_main()
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
    preprocessing = Preprocessing(tuple(config.mean), tuple(config.std))
    augmentation = Augmentation(config.resize_long, config.flip, config.jitter, config.crop)

    def train_item(sample: Any, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(image_tensor(sample.image), sample.mask, augmentation, preprocessing, g)

    train_data = Transformed(train_set, train_item, config.seed)
    drop_last = len(train_data) >= config.batch_size
    steps = len(train_data) // config.batch_size if drop_last else 1
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    optimizer = sgd_with_head_lr(split_parameters(model, "classifier"), config.lr,
                                 config.head_lr_mult, config.momentum, config.weight_decay)
    scheduler = poly_schedule(optimizer, config.epochs * steps, config.poly_power)
    amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    spec = {
        "kind": "segmenter",
        "model": {"backbone": config.backbone, "num_classes": num_classes},
        "preprocessing": preprocessing.to_json(),
        "class_names": class_names,
        "label_offset": 0,
        "config": asdict(config),
    }

    def loss_fn(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)

    start, history = 0, []
    if config.resume:  # on every rank; DDP then starts from rank 0's (the same) weights
        start, history = resume_run(out, spec, model, optimizer, scheduler, scaler)
    trained = data_parallel(model, device)
    precise_bn = config.precise_bn > 0 and not config.freeze_bn
    for epoch in range(start, config.epochs):
        train_data.set_epoch(epoch)
        batches = train_loader(train_data, per_rank_batch, seed=config.seed, epoch=epoch,
                               workers=config.workers, drop_last=drop_last)
        set_train_mode(trained, config.freeze_bn)
        with seeded(epoch_seed(config.seed, epoch, distributed.rank()), device):
            result = train_epoch(trained, batches, loss_fn, optimizer, scheduler, scaler,
                                 device, amp=amp, max_steps=steps, total=steps,
                                 progress=config.progress and main,
                                 description=f"epoch {epoch + 1}/{config.epochs}")
            if precise_bn:  # seeded too: the head's dropout is active in training mode
                recompute_bn_statistics(model, train_loader(train_data, per_rank_batch,
                                                            seed=config.seed, epoch=epoch,
                                                            workers=config.workers,
                                                            drop_last=False),
                                        device, config.precise_bn)
        if precise_bn:
            average_buffers(model)  # every rank's batches count (same number on each)
        else:
            broadcast_buffers(model)  # rank 0's running statistics everywhere
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": result.loss,
                                  "steps": result.steps,
                                  "images_per_second": result.images_per_second}
        if val_set is not None:
            confusion = distributed.all_reduce_sum(evaluate_segmenter(
                model, shard_of(val_set), preprocessing, device, num_classes,
                batch_size=per_rank_batch, amp=amp))
            record["val_miou"] = float(mean_iou(confusion))
            record["val_iou"] = [None if v != v else float(v) for v in iou_per_class(confusion)]
        history.append(record)
        if main:
            logger.info("epoch %d/%d: loss %.4f, %.1f img/s%s", epoch + 1, config.epochs,
                        result.loss, result.images_per_second,
                        f", val mIoU {record['val_miou']:.4f}" if "val_miou" in record else "")
            save_run(out, spec, bare(trained), optimizer, scheduler, scaler, epoch + 1,
                     history)
        distributed.barrier()  # nobody goes on (or reads out/) before rank 0 has written
