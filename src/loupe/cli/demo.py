"""``loupe demo``: the whole evaluation on the synthetic set, offline, on a CPU (~1.5 min)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="train, explain and evaluate on the synthetic set (offline, CPU)",
        description=__doc__,
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="run folder (default runs/demo)")
    p.add_argument("--size", choices=("default", "small"), default="default",
                   help="small: a seconds-long version for smoke tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a busy 2-core machine one thread "
                   "is several times faster than two; results depend slightly on it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from loupe.cli import UserError
    from loupe.demo import badge_table, run_demo
    from loupe.reports import markdown_table

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
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
