"""``loupe demo``: the whole loop on the synthetic set, offline, on a CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli.args import NO_PROGRESS_HELP, add_command
from loupe.cli.values import non_negative_int, output_folder, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "demo", help="the whole loop on a synthetic set (offline, CPU)",
        description="The whole loop on the seeded synthetic set, offline, on a CPU: train a "
        "small classifier, make the maps of every method, evaluate them against the "
        "synthetic masks, and write OUT/report.md (about 1 min; --size small: seconds).",
        examples=["loupe demo", "loupe demo --size small --out /tmp/demo"],
    )
    p.add_argument("--out", type=output_folder, default=Path("runs/demo"), help="run folder")
    p.add_argument("--size", choices=("default", "small"), default="default",
                   help="small: a seconds-long version for smoke tests")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the demo (data, training, stochastic methods)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (1: on a busy 2-core machine one thread is several "
                   "times faster than two; results depend slightly on it)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from loupe.demo import badge_table, run_demo
    from loupe.reports import markdown_table

    torch.set_num_threads(args.threads)

    result = run_demo(args.out, size=args.size, seed=args.seed,
                      progress=not args.no_progress)
    print(markdown_table(result.table), end="")
    print(f"classifier validation mAP: {100 * result.classifier_map:.1f}%")
    print("badge statistic (share of each map's positive energy inside the objects that lies "
          "on their badges; docs/synthetic-data.md):")
    print(badge_table(result.badges), end="")
    print(f"report: {result.out / 'report.md'} ({result.seconds['total']:.0f} s)")
    return 0
