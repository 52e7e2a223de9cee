"""Data-parallel training under ``torchrun``: DistributedDataParallel, the per-rank batch,
the sampler that deals each epoch's shuffled images to the ranks, and keeping buffers and
validation results the same on every rank.

``loupe train`` and ``loupe train-seg`` run unchanged with one process (no ``torchrun``) or
with ``torchrun --nproc_per_node N``. The process group is set up by
:func:`loupe.distributed.distributed_session` (NCCL on CUDA, gloo on the CPU).

The rules, for ``W`` processes:

* ``--batch-size`` is the **global** batch: each rank takes ``batch_size / W`` images per step
  (a ValueError when it does not divide), so the learning rate, the schedule and the number of
  steps per epoch are those of one process.
* Each epoch's order is one permutation of the training set fixed by ``(seed, epoch)``
  (:func:`epoch_permutation`); rank ``r`` takes its positions ``r, r + W, ...``, so the
  ``W`` per-rank batches of step ``s`` together hold exactly the images of step ``s`` of a
  single process. Augmentation is seeded per image (:class:`~loupe.training.transforms.
  Transformed`), so an image is augmented the same way on any rank.
* Gradients are averaged by DDP: with equal per-rank batches the gradient is that of the mean
  loss over the global batch. BatchNorm is plain DDP, not SyncBatchNorm: in training mode each
  rank normalises with its own ``batch_size / W`` images, and DDP broadcasts rank 0's running
  statistics at every forward. With frozen BatchNorm (``--freeze-bn``) and no dropout a run of
  ``W`` processes therefore follows one process up to floating-point summation order.
* After each epoch rank 0's buffers are copied to every rank (:func:`broadcast_buffers`), or,
  after precise BatchNorm, every rank's statistics are averaged (:func:`average_buffers`);
  validation is sharded (image ``i`` on rank ``i % W``) and its results are all-reduced
  (:func:`gathered_rows`), so every rank holds the same validation scores; rank 0 alone writes
  the run folder, and all ranks wait for it (a barrier) before the next epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, Subset

from loupe import distributed


def per_rank_batch_size(batch_size: int, world: int) -> int:
    """The images each of ``world`` processes takes per step of a global ``batch_size``."""
    if batch_size % world:
        raise ValueError(
            f"--batch-size {batch_size} is the global batch and must be divisible by the "
            f"{world} torchrun processes (each takes batch_size / {world} images per step)"
        )
    return batch_size // world


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order ``(n,)`` of epoch ``epoch``: ``torch.randperm`` from a generator
    seeded ``seed * 7919 + epoch`` after one int64 draw. This is the order
    ``DataLoader(shuffle=True, generator=g)`` produces with that generator (it draws its
    workers' base seed first), so one process trains on the same order as loupe did before
    distributed training existed."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    torch.empty((), dtype=torch.int64).random_(generator=g)
    return torch.randperm(n, generator=g)


class RankShuffleSampler(Sampler[int]):
    """Rank ``rank``'s indices of :func:`epoch_permutation` ``(n, seed, epoch)``: positions
    ``rank, rank + world, ...``. With ``drop_last`` the permutation is cut to a multiple of
    ``world``; without, it is padded by repeating its start (as ``DistributedSampler``), so
    every rank gets the same number of indices (DDP needs the same number of steps)."""

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 drop_last: bool = False) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world, self.drop_last = rank, world, drop_last

    def __len__(self) -> int:
        return self.n // self.world if self.drop_last else -(-self.n // self.world)

    def __iter__(self) -> Iterator[int]:
        order = epoch_permutation(self.n, self.seed, self.epoch)
        total = len(self) * self.world
        if total > self.n:  # pad by repeating the start (at most world - 1 items)
            order = order.repeat(-(-total // max(self.n, 1)))
        return iter(order[:total][self.rank::self.world].tolist())


def train_loader(dataset: Any, per_rank_batch: int, *, seed: int, epoch: int, workers: int,
                 drop_last: bool) -> DataLoader:
    """This rank's DataLoader of epoch ``epoch`` (a :class:`RankShuffleSampler`); in one
    process the same order and batches as ``loader(..., shuffle=True)`` of
    :mod:`loupe.training.loop`. The loader's own generator only seeds workers."""
    sampler = RankShuffleSampler(len(dataset), seed, epoch, distributed.rank(),
                                 distributed.world_size(), drop_last)
    return DataLoader(
        dataset, batch_size=per_rank_batch, sampler=sampler, num_workers=workers,
        drop_last=drop_last, pin_memory=torch.cuda.is_available(), persistent_workers=False,
        generator=torch.Generator().manual_seed(seed * 7919 + epoch),
    )


def shard_of(dataset: Any) -> Any:
    """This rank's items ``rank, rank + world, ...`` of ``dataset`` (all of it in one
    process), for sharded validation; see :func:`gathered_rows`."""
    if distributed.world_size() == 1:
        return dataset
    return Subset(dataset, range(distributed.rank(), len(dataset), distributed.world_size()))


def gathered_rows(rows: torch.Tensor, total: int) -> torch.Tensor:
    """``(total, ...)``: row ``i`` from the rank that holds item ``i`` (:func:`shard_of`), on
    every rank. ``rows`` are this rank's ``(ceil-or-floor(total / W), ...)`` rows. Each row is
    summed with zeros from the other ranks, so the values are exact."""
    full = rows.new_zeros((total, *rows.shape[1:]))
    full[distributed.rank()::distributed.world_size()] = rows
    return distributed.all_reduce_sum(full)


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` under ``torchrun`` (more than one
    process), ``model`` itself otherwise. The wrapper's forward takes part in collectives:
    validate, recompute statistics and save with :func:`bare` (the model itself)."""
    if distributed.world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def bare(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (``model`` otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _all_reduced_buffers(buffers: Sequence[torch.Tensor], keep: bool,
                         scale: float | None) -> None:
    """Sum ``buffers`` over ranks in one flat all-reduce per dtype; ranks other than 0 send
    zeros unless ``keep``; float sums are multiplied by ``scale`` when given."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for buffer in buffers:
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for dtype, group in by_dtype.items():
        flat = torch.cat([b.detach().reshape(-1) for b in group])
        if not keep and not distributed.is_main():
            flat.zero_()
        distributed.all_reduce_sum(flat)
        if scale is not None and dtype.is_floating_point:
            flat.mul_(scale)
        offset = 0
        for buffer in group:
            buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, exactly (the
    others send zeros to a sum). In training mode each rank's last forward updated its own
    statistics; DDP would have overwritten them with rank 0's at the next forward."""
    if distributed.world_size() > 1:
        _all_reduced_buffers(list(bare(model).buffers()), keep=False, scale=None)


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers over ranks (integer ones, such as BatchNorm's batch
    counter, are taken from rank 0): after precise BatchNorm on the same number of batches per
    rank, the mean over ranks is the mean over all their batches."""
    if distributed.world_size() == 1:
        return
    buffers = list(bare(model).buffers())
    floats = [b for b in buffers if b.dtype.is_floating_point]
    _all_reduced_buffers(floats, keep=True, scale=1.0 / distributed.world_size())
    _all_reduced_buffers([b for b in buffers if not b.dtype.is_floating_point], keep=False,
                         scale=None)
