"""The one training loop. A trainer (classifier, segmentation, and the coming AMN) says what
it trains as a :class:`Task`: the network it built, its head, its training items, its loss,
its ``model.json`` and how to validate; :func:`train` runs the loop that every trainer shares
with the :class:`~loupe.training.recipe.Recipe`: SGD with a faster head, poly decay per step,
mixed precision on CUDA, seeded epochs, ``--resume``, precise BatchNorm, one process or
several ``torchrun`` processes (:mod:`loupe.training.parallel`), and after every epoch the
run folder (:mod:`loupe.training.checkpoints`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from loupe import distributed
from loupe.models.runs import MODEL_FILE
from loupe.training.checkpoints import CHECKPOINT_FILE, resume_run, save_run
from loupe.training.parallel import (
    average_buffers,
    bare,
    broadcast_buffers,
    data_parallel,
    per_rank_batch_size,
    train_loader,
)
from loupe.training.recipe import Recipe
from loupe.training.schedules import poly_schedule, sgd_with_head_lr, split_parameters
from loupe.training.transforms import Transformed

logger = logging.getLogger(__name__)


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
    ``targets`` is a tensor, or a tuple or dict of tensors (a task with several targets).

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
        targets = to_device(targets, device)
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


def to_device(batch: Any, device: torch.device) -> Any:
    """A tensor, or tuples, lists and dicts of tensors, on ``device`` (non-blocking)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


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


# --------------------------------------------------------------------------- the loop


@dataclass
class Task:
    """What a trainer hands the loop.

    model: the network on its device, initialised (seeded by the trainer).
    head: the module name of its new head (learning rate ``lr * head_lr_mult``).
    train_data: training items ``(input, target)``, augmented per sample and epoch.
    loss: ``loss(output, target)`` (a torchvision segmentation output is its ``"out"``).
    spec: the ``model.json`` of the run (:mod:`loupe.models.runs`).
    freeze_bn: BatchNorm statistics fixed while training (IRN's ``FixedBatchNorm``).
    precise_bn: recompute BatchNorm statistics on this many training batches after each
        epoch (:func:`recompute_bn_statistics`; 0: off).
    validate: ``validate(model, batch_size, amp) -> figures`` after each epoch, on every rank
        with the bare model (None: no validation); the figures go into ``history.json``.
    score: the key of the figure logged after each epoch, and its words.
    """

    model: nn.Module
    head: str
    train_data: Transformed
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    spec: dict[str, Any]
    freeze_bn: bool = False
    precise_bn: int = 0
    validate: Callable[[nn.Module, int, bool], dict[str, Any]] | None = None
    score: tuple[str, str] = ("val", "validation")


def train(config: Recipe, build_task: Callable[[Any, torch.device], Task]) -> Path:
    """Train (or, with ``config.resume``, continue) the task ``build_task(config, device)``
    builds; returns ``out/model.pt``.

    ``--resume`` needs a checkpoint in ``config.out``; the global ``config.batch_size`` is
    split over the ``torchrun`` processes (``batch_size / world`` each); everything runs in a
    distributed session on ``config.device``, and rank 0 alone writes ``out``. ``--resume``
    loads the checkpoint on every rank, so ``out`` must be on a file system all ranks see."""
    config.check()
    per_rank_batch = per_rank_batch_size(config.batch_size, distributed.launched_world_size())
    out = Path(config.out)
    if config.resume and not (out / CHECKPOINT_FILE).is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {out / CHECKPOINT_FILE}")
    with distributed.distributed_session(config.device) as device:
        fit(config, build_task(config, device), device, per_rank_batch)
    return out / MODEL_FILE


@dataclass
class _Optimisation:
    """The optimiser state of a run and what its epochs need."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp: bool
    steps: int
    drop_last: bool


def fit(config: Recipe, task: Task, device: torch.device, per_rank_batch: int) -> None:
    """Per epoch: one pass of ``task.train_data``, BatchNorm statistics made the same on every
    rank, validation, then (rank 0) ``model.pt``, ``model.json``, ``checkpoint.pt`` and
    ``history.json`` in ``config.out``; every rank waits for them before going on."""
    out = Path(config.out)
    drop_last = len(task.train_data) >= config.batch_size
    steps = len(task.train_data) // config.batch_size if drop_last else 1
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    optimizer = sgd_with_head_lr(split_parameters(task.model, task.head), config.lr,
                                 config.head_lr_mult, config.momentum, config.weight_decay)
    scheduler = poly_schedule(optimizer, config.epochs * steps, config.poly_power)
    amp = config.amp and device.type == "cuda"
    run = _Optimisation(optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=amp), amp,
                        steps, drop_last)
    start, history = 0, []
    if config.resume:  # on every rank; DDP then starts from rank 0's (the same) weights
        start, history = resume_run(out, task.spec, task.model, optimizer, scheduler,
                                    run.scaler)
    trained = data_parallel(task.model, device)
    for epoch in range(start, config.epochs):
        result = _epoch(config, task, trained, run, device, per_rank_batch, epoch)
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": result.loss,
                                  "steps": result.steps,
                                  "images_per_second": result.images_per_second}
        if task.validate is not None:
            record.update(task.validate(task.model, per_rank_batch, amp))
        history.append(record)
        if distributed.is_main():
            key, words = task.score
            logger.info("epoch %d/%d: loss %.4f, %.1f img/s%s", epoch + 1, config.epochs,
                        result.loss, result.images_per_second,
                        f", {words} {record[key]:.4f}" if key in record else "")
            save_run(out, task.spec, bare(trained), optimizer, scheduler, run.scaler,
                     epoch + 1, history)
        distributed.barrier()  # nobody goes on (or reads out/) before rank 0 has written


def _epoch(config: Recipe, task: Task, trained: nn.Module, run: _Optimisation,
           device: torch.device, per_rank_batch: int, epoch: int) -> EpochResult:
    """One seeded training pass (and precise BatchNorm), then the BatchNorm statistics made
    the same on every rank: rank 0's, or after precise BatchNorm the mean over ranks."""
    task.train_data.set_epoch(epoch)
    batches = train_loader(task.train_data, per_rank_batch, seed=config.seed, epoch=epoch,
                           workers=config.workers, drop_last=run.drop_last)
    set_train_mode(trained, task.freeze_bn)
    with seeded(epoch_seed(config.seed, epoch, distributed.rank()), device):
        result = train_epoch(trained, batches, task.loss, run.optimizer, run.scheduler,
                             run.scaler, device, amp=run.amp, max_steps=run.steps,
                             total=run.steps, progress=config.progress and distributed.is_main(),
                             description=f"epoch {epoch + 1}/{config.epochs}")
        if task.precise_bn:  # seeded too: dropout is active in training mode
            every = train_loader(task.train_data, per_rank_batch, seed=config.seed,
                                 epoch=epoch, workers=config.workers, drop_last=False)
            recompute_bn_statistics(task.model, every, device, task.precise_bn)
    if task.precise_bn:
        average_buffers(task.model)  # every rank's batches count (same number on each)
    else:
        broadcast_buffers(trained)  # rank 0's running statistics everywhere
    return result
