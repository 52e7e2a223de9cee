"""What classifier and segmentation training share: devices, mixed precision, opening a data
split (including the synthetic set), BatchNorm freezing, and one epoch of optimisation with a
tqdm progress bar (loss, images per second), also as one of several ``torchrun`` processes
(:mod:`loupe.training.parallel`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from loupe.data.synthetic import SyntheticConfig
from loupe.pipeline import distributed

logger = logging.getLogger(__name__)

DATASET_KINDS = ("voc", "coco", "folder", "yolo", "synthetic")
_SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SyntheticSplits:
    """Sizes and seed of the synthetic splits: ``train`` uses ``seed``, ``val`` ``seed + 1``,
    ``test`` ``seed + 2``; ``scenes`` are the generator's parameters (see
    :mod:`loupe.data.synthetic`)."""

    n_train: int = 400
    n_val: int = 100
    size: int = 96
    seed: int = 0
    scenes: SyntheticConfig = field(default_factory=SyntheticConfig)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a ValueError when CUDA is asked for but
    absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    """float16 autocast on CUDA when ``enabled``; nothing elsewhere (mixed precision is a
    CUDA feature of the recipe)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The global-RNG seed of one epoch on one ``torchrun`` rank (dropout and other in-model
    randomness): ``seed * 1000 + epoch`` on rank 0, shifted by ``1_000_003 * rank`` elsewhere
    so that ranks do not draw the same dropout masks for different images."""
    return seed * 1000 + epoch + 1_000_003 * rank


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with the global RNG (CPU, and ``device`` when CUDA) seeded by ``seed``,
    and restore the caller's RNG state afterwards: dropout and other in-model randomness of an
    epoch then depend on the seed and the epoch only (so a resumed run matches)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def open_split(kind: str, root: str | None, split: str,
               synthetic: SyntheticSplits | None = None,
               options: dict[str, Any] | None = None) -> Any:
    """A data set of ``kind`` (one of :data:`DATASET_KINDS`) for ``split``, yielding
    :class:`loupe.data.base.Sample`; ``root`` is ignored for ``"synthetic"``; ``options``
    go to :func:`loupe.data.open_dataset` (e.g. ``names`` of a YOLO set)."""
    if kind not in DATASET_KINDS:
        raise ValueError(
            f"unknown dataset kind {kind!r}; choose one of: {', '.join(DATASET_KINDS)}"
        )
    if kind == "synthetic":
        from loupe.data.synthetic import make_synthetic

        synthetic = synthetic or SyntheticSplits()
        if split not in _SPLIT_OFFSETS:
            raise ValueError(f"synthetic data has splits train, val, test; got {split!r}")
        n = synthetic.n_val if split != "train" else synthetic.n_train
        return make_synthetic(n, synthetic.size, synthetic.seed + _SPLIT_OFFSETS[split],
                              synthetic.scenes)
    if root is None:
        raise ValueError(f"--root is required for dataset kind {kind!r}")
    from loupe.data import open_dataset

    return open_dataset(kind, root, split, **(options or {}))


def has_background(class_names: Iterable[str]) -> bool:
    """True when index 0 is a segmentation background (never an image-level label)."""
    first = next(iter(class_names), "")
    return first.strip("_").lower() in ("background", "bg")


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``, with every BatchNorm kept in eval mode (fixed statistics, as IRN's
    ``FixedBatchNorm``) when ``freeze_bn``."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


@dataclass
class EpochResult:
    """Mean training loss, steps taken, images seen and images per second of one epoch."""

    loss: float
    steps: int
    images: int
    images_per_second: float


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    *,
    amp: bool,
    max_steps: int | None = None,
    description: str = "train",
    progress: bool = True,
    total: int | None = None,
) -> EpochResult:
    """One pass of ``(images, targets)`` batches: forward (autocast on CUDA when ``amp``),
    ``loss_fn(output, targets)``, scaled backward, optimiser and per-step scheduler step.

    ``model`` is expected in training mode (see :func:`set_train_mode`). Stops after
    ``max_steps`` steps when given. A non-finite loss raises a ValueError (diverged).

    Under ``torchrun`` (``model`` a DistributedDataParallel, every rank calling this with the
    same number of batches) the reported loss is the mean of the ranks' losses, i.e. the loss
    of the global batch, the same on every rank, so that all ranks stop together on
    divergence; ``images`` and ``images_per_second`` count all ranks."""
    start = time.perf_counter()
    world = distributed.world_size()
    total_loss, steps, seen = 0.0, 0, 0
    bar = tqdm(batches, desc=description, total=total, disable=not progress, leave=False,
               dynamic_ncols=True)
    for images, targets in bar:
        if max_steps is not None and steps >= max_steps:
            break
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp):
            output = model(images)
            if isinstance(output, dict):  # torchvision segmentation models
                output = output["out"]
            loss = loss_fn(output.float(), targets)
        # the global batch's loss on every rank (a no-op in one process)
        reported = distributed.all_reduce_sum(loss.detach().clone()) / world
        if not torch.isfinite(reported):
            raise ValueError(f"training diverged at step {steps}: loss is {float(reported)}; "
                             "lower the learning rate (--lr)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        steps += 1
        seen += images.shape[0] * world
        total_loss += float(reported)
        rate = seen / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{total_loss / steps:.4f}", img_s=f"{rate:.1f}")
    bar.close()
    elapsed = max(time.perf_counter() - start, 1e-9)
    return EpochResult(total_loss / max(steps, 1), steps, seen, seen / elapsed)


def loader(dataset: Any, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
           workers: int, drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader whose shuffling order is fixed by ``(seed, epoch)``."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=workers,
        drop_last=drop_last, pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


@torch.no_grad()
def recompute_bn_statistics(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], device: torch.device,
    max_batches: int,
) -> int:
    """Precise BatchNorm (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): replace every
    BatchNorm's running mean and variance by their plain average over ``max_batches`` batches
    of training images, with the current weights. The exponential moving average lags behind
    weights that change quickly (short runs, MobileNetV3's momentum 0.01), and evaluation then
    uses statistics of an older network. Returns the number of batches used; the model's
    training flag and every momentum are restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or max_batches < 1:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    used = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        model.train()
        for images, _ in batches:
            if used >= max_batches:
                break
            model(images.to(device))
            used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return used
