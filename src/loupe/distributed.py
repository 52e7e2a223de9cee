"""Devices and ``torchrun``: the device a ``--device`` names, process group, ranks, sharding
and reductions.

Every helper works unchanged in a plain single process (no ``torchrun``): ``rank() == 0``,
``world_size() == 1``, ``shard(items) == list(items)``, reductions return their input. The
state lives in ``torch.distributed`` itself; this module keeps none.

Typical use (``loupe maps``, ``loupe evaluate``, training code)::

    device = init_distributed("cuda")        # NCCL on cuda:LOCAL_RANK, gloo on the CPU
    for item in shard(items):                # items[rank::world]: each exactly once
        ...
    totals = all_reduce_sum(totals)          # the same sum on every rank
    if is_main():
        write_reports(totals)
    destroy_distributed()

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them (``init_method="env://"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by ``torchrun``)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE={value!r} is not an integer") from None
    if size < 1:
        raise ValueError(f"environment variable WORLD_SIZE={size} must be at least 1")
    return size


def launched_rank() -> int:
    """``RANK`` from the environment (0 without ``torchrun``); also valid before and after
    the process group exists."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """``LOCAL_RANK`` (this process's index on its machine), 0 without ``torchrun``."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0: the process that writes shared files (reports, checkpoints)."""
    return rank() == 0


def init_distributed(
    device: str | torch.device | None = None, *, timeout_s: float = 1800.0
) -> torch.device:
    """Join the process group ``torchrun`` set up, and return the device this process uses.

    ``device``: ``None`` picks CUDA when available, else the CPU; ``"cuda"`` (no index)
    becomes ``cuda:LOCAL_RANK`` so that each process of a machine takes its own GPU; an
    explicit ``"cuda:N"`` is kept. The backend is NCCL for a CUDA device and gloo for the
    CPU. With ``WORLD_SIZE`` unset or 1 no process group is created (a no-op apart from
    resolving the device). Calling it again when the group exists only resolves the device.
    """
    resolved = resolve_device(device)
    size = launched_world_size()
    if size == 1 or (dist.is_available() and dist.is_initialized()):
        return resolved
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run one process")
    missing = [key for key in ENV_KEYS if key not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={size} but {', '.join(missing)} not set: launch with torchrun "
            "(see docs/distributed.md)"
        )
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group(
        backend=backend, init_method="env://", timeout=timedelta(seconds=timeout_s),
        **({"device_id": resolved} if resolved.type == "cuda" else {}),
    )
    logger.debug("rank %d/%d joined (%s, %s)", rank(), world_size(), backend, resolved)
    return resolved


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device a ``--device`` value names: ``None`` or ``"auto"`` -> CUDA when available,
    else the CPU; ``"cuda"`` without an index -> ``cuda:LOCAL_RANK`` under ``torchrun`` (the
    current device otherwise). A ValueError names the value when it is not a device or CUDA
    is asked for but absent."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device!r} is not a device ({error})") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if resolved.index is None:
            index = local_rank() if launched_world_size() > 1 else torch.cuda.current_device()
            if index >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK {index} but only {torch.cuda.device_count()} GPUs are visible; "
                    "start at most one process per GPU (--nproc_per_node)"
                )
            resolved = torch.device("cuda", index)
    return resolved


@contextmanager
def distributed_session(device: str | torch.device | None = None) -> Iterator[torch.device]:
    """:func:`init_distributed` for a block; on exit the process group is destroyed if this
    block created it (a group the caller set up stays, so one process can run several
    commands in one group: PyTorch does not support re-creating a destroyed default group
    reliably)."""
    created = launched_world_size() > 1 and not (dist.is_available() and dist.is_initialized())
    resolved = init_distributed(device)
    try:
        yield resolved
    finally:
        if created:
            destroy_distributed()


def destroy_distributed() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: ``items[rank::world]``.

    Every item goes to exactly one rank and nothing is padded or repeated (unlike
    ``DistributedSampler``'s default), so ranks may get counts that differ by one."""
    return list(items[rank()::world_size()])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks, in place, returned.

    Integer tensors are summed exactly (use int64 for counts). Under NCCL a CPU tensor is
    reduced through the current GPU and copied back; under gloo a CUDA tensor goes through
    the CPU."""
    if not is_distributed():
        return tensor
    backend = dist.get_backend()
    if backend == "nccl" and tensor.device.type != "cuda":
        staged = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(staged, op=dist.ReduceOp.SUM)
        tensor.copy_(staged)
    elif backend == "gloo" and tensor.device.type != "cpu":
        staged = tensor.cpu()
        dist.all_reduce(staged, op=dist.ReduceOp.SUM)
        tensor.copy_(staged)
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable; for small results such as per-image summaries), as a
    list in rank order on rank 0 and None elsewhere; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable); ``obj`` itself in a single process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
