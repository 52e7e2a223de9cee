"""Multi-label classifier training for WSSS: the model, the recipe, validation mAP.

The default model for ResNets is IRN's (Ahn et al., "Weakly Supervised Learning of Instance
Segmentation with Inter-pixel Relations", CVPR 2019): the last stage with stride 1 (output
stride 16), global average pooling, and a bias-free linear classifier, which is IRN's bias-free
1x1 convolution on the pooled features written as an ``nn.Linear`` so that loupe's ``cam``
finds it (:mod:`loupe.heads`) and CAM is exact: ``mean_ij CAM_k = logit_k``. Other torchvision
backbones keep their own head with a new final ``nn.Linear``; ``"small"`` is a small
VGG-style GAP network for CPU demos and tests; ``"timm:<name>"`` uses timm (extra ``timm``).

Loss: binary cross-entropy on image-level labels. For segmentation sets (class 0 =
background, never a label) the classifier has one output per object class: output ``k`` is
data-set class ``k + label_offset`` (recorded in ``model.json``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from loupe.pipeline import distributed
from loupe.training.checkpoints import (
    read_state_dict,
    resume_run,
    save_run,
)
from loupe.training.common import (
    SyntheticSplits,
    autocast,
    epoch_seed,
    has_background,
    loader,
    open_split,
    seeded,
    set_train_mode,
    train_epoch,
)
from loupe.training.parallel import (
    bare,
    broadcast_buffers,
    data_parallel,
    gathered_rows,
    launch_training,
    shard_of,
    train_loader,
)
from loupe.training.schedules import poly_schedule, sgd_with_head_lr, split_parameters
from loupe.training.transforms import (
    Augmentation,
    Preprocessing,
    Transformed,
    augment,
    image_tensor,
    resize_and_pad,
)

logger = logging.getLogger(__name__)

OFFLINE_MESSAGE = "ImageNet weights not available offline; use --init PATH or --pretrained none"
RESNETS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
    "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
)
SMALL_WIDTHS = (16, 32, 64, 128)
SMALL_BACKBONES = {"small": 3, "small-s4": 2}  # name -> max poolings (output stride 8, 4)


class SmallGAPNet(nn.Module):
    """A small VGG-style classifier ending in GAP + a bias-free linear layer (CAM-exact).

    Four stages of two 3x3 conv-BN-ReLU, 2x2 max pooling before the first ``pools`` stages
    after the first (``pools=3``: output stride 8, ``2``: output stride 4):
    ``(B, 3, H, W) -> features (B, widths[-1], H/s, W/s) -> logits (B, num_classes)``."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = SMALL_WIDTHS,
                 pools: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i, width in enumerate(widths):
            if 0 < i <= pools:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def _final_linear(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return names[-1]


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def classifier_head(model: nn.Module) -> str:
    """Module name of the classifier's final linear layer (the 10x learning-rate group)."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        for name, module in model.named_modules():
            if module is head:
                return name
    return _final_linear(model)


def _torchvision_model(backbone: str, pretrained: str) -> nn.Module:
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown backbone {backbone!r}: not a torchvision classification "
                         "model (see torchvision.models.list_models()); timm models: timm:NAME")
    if pretrained == "none":
        return torchvision.models.get_model(backbone, weights=None)
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    try:
        return torchvision.models.get_model(backbone, weights=weights)
    except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
        raise ValueError(f"{OFFLINE_MESSAGE} ({backbone} {weights}: {error})") from error


def _timm_model(name: str, num_classes: int, pretrained: str) -> nn.Module:
    try:
        import timm
    except ImportError as error:
        raise ValueError(f"backbone timm:{name} needs timm: pip install 'loupe[timm]'") from error
    if not timm.is_model(name):
        raise ValueError(f"unknown backbone timm:{name}: not a timm model (timm.list_models())")
    if pretrained == "none":
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes)
    except (OSError, RuntimeError) as error:
        raise ValueError(f"{OFFLINE_MESSAGE} (timm {name}: {error})") from error


def build_classifier(
    backbone: str, num_classes: int, *, head: str = "auto", output_stride: int = 16,
    pretrained: str = "none", init: str | None = None,
) -> nn.Module:
    """A multi-label classifier with ``num_classes`` outputs.

    Args:
        backbone: a torchvision classification model name (``"resnet50"``), ``"small"``
            (:class:`SmallGAPNet`, output stride 8), ``"small-s4"`` (the same with output
            stride 4), or ``"timm:<name>"``.
        head: ``"irn"`` (ResNets: last stage stride 1 when ``output_stride=16``, GAP,
            bias-free linear), ``"linear"`` (the backbone's own head with a new final
            ``nn.Linear``), or ``"auto"`` (``irn`` for ResNets, ``linear`` otherwise).
        output_stride: 16 or 32, for the ``irn`` head.
        pretrained: ``"imagenet"`` (torchvision weight enum; a ValueError saying so when the
            weights cannot be downloaded) or ``"none"`` (random initialisation).
        init: a local state dict loaded into everything but the new head (checked: every
            backbone parameter must be present with its shape).
    """
    if pretrained not in ("imagenet", "none"):
        raise ValueError(f"--pretrained must be 'imagenet' or 'none', got {pretrained!r}")
    if output_stride not in (16, 32):
        raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
    if backbone in SMALL_BACKBONES:
        if pretrained == "imagenet":
            raise ValueError(f"backbone {backbone!r} has no ImageNet weights; use --pretrained "
                             "none")
        model: nn.Module = SmallGAPNet(num_classes, pools=SMALL_BACKBONES[backbone])
    elif backbone.startswith("timm:"):
        model = _timm_model(backbone[5:], num_classes, pretrained)
    else:
        model = _torchvision_model(backbone, pretrained)
        resolved = head if head != "auto" else ("irn" if backbone in RESNETS else "linear")
        if resolved == "irn":
            if backbone not in RESNETS:
                raise ValueError(f"head 'irn' needs a ResNet backbone, got {backbone!r}")
            if output_stride == 16:
                block = model.layer4[0]
                for module in block.modules():
                    if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                        module.stride = (1, 1)
            model.fc = nn.Linear(model.fc.in_features, num_classes, bias=False)
        elif resolved == "linear":
            name = _final_linear(model)
            old = model.get_submodule(name)
            _replace_module(model, name, nn.Linear(old.in_features, num_classes))
        else:
            raise ValueError(f"head must be 'auto', 'irn' or 'linear', got {head!r}")
    if init is not None:
        load_backbone_weights(model, init, classifier_head(model))
    return model


def load_backbone_weights(model: nn.Module, path: str | Path, head: str) -> None:
    """Load a state dict file into ``model`` except its head ``head``: every other entry of
    the model must be in the file with the same shape (ValueError naming the file otherwise)."""
    state = read_state_dict(path)
    prefix = head + "."
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or wrong:
        raise ValueError(f"{path}: does not fit {type(model).__name__} (missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}; shape mismatch {wrong[:3]})")
    model.load_state_dict({k: state[k] for k in own}, strict=False)


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


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision of each column, ``(N, C)`` scores and 0/1 labels -> ``(C,)`` float64.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order
    (the PASCAL/sklearn non-interpolated definition; tied scores form one threshold). NaN for
    a class without positives."""
    scores, labels = scores.double().T, labels.double().T  # (C, N)
    order = scores.argsort(dim=1, descending=True, stable=True)
    s = scores.gather(1, order)
    y = labels.gather(1, order)
    tp = y.cumsum(1)
    precision = tp / torch.arange(1, s.shape[1] + 1, dtype=s.dtype, device=s.device)
    # each item's precision is taken at the last item of its tie group
    ascending = (-s).contiguous()
    group_end = torch.searchsorted(ascending, ascending, right=True) - 1
    positives = y.sum(1)
    ap = (y * precision.gather(1, group_end)).sum(1) / positives
    return ap.where(positives > 0, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of :func:`average_precision` over the classes that have a positive."""
    ap = average_precision(scores, labels)
    return float(ap[~ap.isnan()].mean()) if (~ap.isnan()).any() else float("nan")


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


@dataclass
class ClassifierConfig:
    """Everything :func:`train_classifier` does; defaults are the WSSS recipe (IRN on VOC:
    ResNet-50 with output stride 16, batch 16, 5 epochs, crop 512, long side 320..640, flip;
    plus colour jitter). IRN trains with lr 0.1 and no momentum; here SGD has momentum 0.9 and
    lr 0.01, the same effective step ``lr / (1 - momentum)``. Poly decay (power 0.9) per step,
    head at 10x. ``freeze_bn``/``freeze_stem`` None: on when the backbone starts from trained
    weights (IRN keeps BatchNorm statistics and stage 1 fixed), off for random init.
    ``max_steps_per_epoch`` shortens epochs (tests, demos)."""

    dataset: str = "voc"
    root: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    synthetic: SyntheticSplits = field(default_factory=SyntheticSplits)
    data_options: dict[str, Any] = field(default_factory=dict)
    backbone: str = "resnet50"
    head: str = "auto"
    output_stride: int = 16
    pretrained: str = "imagenet"
    init: str | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    epochs: int = 5
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
    eval_size: int | None = None
    freeze_bn: bool | None = None
    freeze_stem: bool | None = None
    amp: bool = True
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    out: str = "runs/classifier"
    resume: bool = False
    max_steps_per_epoch: int | None = None
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(tuple(self.mean), tuple(self.std))

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.resize_long, self.flip, self.jitter, self.crop)


def _check(config: ClassifierConfig) -> None:
    for name in ("epochs", "batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.lr <= 0:
        raise ValueError(f"lr must be positive, got {config.lr}")


def train_classifier(config: ClassifierConfig) -> Path:
    """Train (or, with ``config.resume``, continue) a classifier; returns ``out/model.pt``.

    Per epoch: one pass of the augmented training split, validation mAP on ``val_split``,
    then ``model.pt``, ``model.json``, ``checkpoint.pt`` and ``history.json`` in ``out``.

    Under ``torchrun`` every process runs this: DistributedDataParallel, ``batch_size`` is the
    global batch (``batch_size / world`` per rank), validation is sharded and all-reduced, and
    rank 0 alone writes ``out`` (see :mod:`loupe.training.parallel`). ``--resume`` loads the
    checkpoint on every rank, so ``out`` must be on a file system that all ranks see."""
    _check(config)
    return launch_training(config, _train)


def _train(config: ClassifierConfig, device: torch.device, per_rank_batch: int) -> None:
    out = Path(config.out)
    main = distributed.is_main()
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
                                 pretrained=config.pretrained, init=config.init).to(device)
    trained_init = config.pretrained == "imagenet" or config.init is not None
    freeze_bn = trained_init if config.freeze_bn is None else config.freeze_bn
    if trained_init if config.freeze_stem is None else config.freeze_stem:
        freeze_stem(model)
    preprocessing, augmentation = config.preprocessing, config.augmentation
    eval_size = config.eval_size or config.crop or 512

    def train_item(sample: Any, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image, _ = augment(image_tensor(sample.image), None, augmentation, preprocessing, g)
        return image, sample.labels[offset:]

    def val_item(sample: Any, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image = preprocessing(image_tensor(sample.image))
        return resize_and_pad(image, eval_size), sample.labels[offset:]

    train_data = Transformed(train_set, train_item, config.seed)
    val_data = Transformed(val_set, val_item, config.seed) if val_set is not None else None
    drop_last = len(train_data) >= config.batch_size
    steps = len(train_data) // config.batch_size if drop_last else 1
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    optimizer = sgd_with_head_lr(split_parameters(model, classifier_head(model)), config.lr,
                                 config.head_lr_mult, config.momentum, config.weight_decay)
    scheduler = poly_schedule(optimizer, config.epochs * steps, config.poly_power)
    amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    spec = {
        "kind": "classifier",
        "model": {"backbone": config.backbone, "num_classes": num_outputs,
                  "head": config.head, "output_stride": config.output_stride},
        "preprocessing": preprocessing.to_json(),
        "class_names": class_names[offset:],
        "label_offset": offset,
        "input_size": eval_size,
        "config": config.to_json(),
    }
    start, history = 0, []
    if config.resume:  # on every rank; DDP then starts from rank 0's (the same) weights
        start, history = resume_run(out, spec, model, optimizer, scheduler, scaler)
    trained = data_parallel(model, device)
    for epoch in range(start, config.epochs):
        train_data.set_epoch(epoch)
        batches = train_loader(train_data, per_rank_batch, seed=config.seed, epoch=epoch,
                               workers=config.workers, drop_last=drop_last)
        set_train_mode(trained, freeze_bn)
        with seeded(epoch_seed(config.seed, epoch, distributed.rank()), device):
            result = train_epoch(
                trained, batches, F.binary_cross_entropy_with_logits, optimizer, scheduler,
                scaler, device, amp=amp, max_steps=steps, progress=config.progress and main,
                description=f"epoch {epoch + 1}/{config.epochs}", total=steps,
            )
        broadcast_buffers(trained)  # rank 0's BatchNorm statistics everywhere
        record = {"epoch": epoch + 1, "loss": result.loss, "steps": result.steps,
                  "images_per_second": result.images_per_second}
        if val_data is not None:
            scores, labels = validation_scores(model, val_data, num_outputs, per_rank_batch,
                                               device, amp, config.workers)
            ap = average_precision(scores, labels)
            record["val_map"] = mean_average_precision(scores, labels)
            record["val_ap"] = [None if math.isnan(v) else v for v in ap.tolist()]
        history.append(record)
        if main:
            logger.info("epoch %d/%d: loss %.4f, %.1f img/s%s", epoch + 1, config.epochs,
                        result.loss, result.images_per_second,
                        f", val mAP {record['val_map']:.4f}" if "val_map" in record else "")
            save_run(out, spec, bare(trained), optimizer, scheduler, scaler, epoch + 1,
                     history)
        distributed.barrier()  # nobody goes on (or reads out/) before rank 0 has written


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
