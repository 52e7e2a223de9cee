"""``loupe maps``: class maps for every image of a data set, one ``<id>.npz`` per image.

Maps are those of each image's ground-truth classes (or its ``--topk`` best), at the image's
size, optionally summed over ``--scales`` and ``--flip`` (the IRN protocol). The run is
resumable (finished images are skipped) and runs sharded under ``torchrun --nproc_per_node N
-m loupe maps ...`` (docs/distributed.md). ``maps.json`` describes the run.
"""

from __future__ import annotations

import argparse

from loupe import distributed
from loupe.cli.args import (
    add_dataset_arguments,
    add_map_options,
    add_method_arguments,
    add_model_arguments,
    add_run_arguments,
    maps_config,
    method_options,
)
from loupe.mapsets.generate import generate_maps


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("maps", help="class maps of a whole data set (<id>.npz files)",
                              description=__doc__.splitlines()[0])
    add_dataset_arguments(p)
    add_model_arguments(p, runs=True)
    group = p.add_argument_group("maps")
    add_method_arguments(group)
    group.add_argument("--topk", type=int, help="maps of the K best-scoring classes instead of "
                       "the image-level labels")
    run_group = add_run_arguments(p, out_help="output folder")
    add_map_options(group, run_group)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = maps_config(args, *method_options(args.method, args.option))
    config.check()
    with distributed.distributed_session(args.device) as device:
        result = generate_maps(config, device)
        rank, world = distributed.rank(), distributed.world_size()
        distributed.barrier()
    elsewhere = f", {result.elsewhere} by another process" if result.elsewhere else ""
    print(f"maps: {result.written} written, {result.skipped} already in {args.out}{elsewhere}"
          + (f" (rank {rank} of {world})" if world > 1 else ""))
    return 0
