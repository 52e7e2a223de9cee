"""The data-set pipeline behind ``loupe maps``, ``loupe masks``, ``loupe evaluate`` and
``loupe report``: map files per image, pseudo-masks, evaluation with threshold sweeps and
bootstrap intervals, and the ``torchrun`` helpers (:mod:`loupe.pipeline.distributed`)."""

from loupe.pipeline.distributed import (
    all_reduce_sum,
    barrier,
    destroy_distributed,
    distributed_session,
    gather_objects,
    init_distributed,
    is_main,
    local_rank,
    rank,
    shard,
    world_size,
)

__all__ = [
    "all_reduce_sum",
    "barrier",
    "destroy_distributed",
    "distributed_session",
    "gather_objects",
    "init_distributed",
    "is_main",
    "local_rank",
    "rank",
    "shard",
    "world_size",
]
