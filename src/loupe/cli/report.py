"""``loupe report``: several evaluation runs side by side as one self-contained HTML page
(each run's tables, its mIoU-threshold plot and its overlays of sample images)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="runs of loupe evaluate side by side (HTML)",
                              description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="folders written by loupe evaluate --out")
    p.add_argument("--out", required=True, type=Path, help="the HTML file to write")
    p.add_argument("--names", nargs="+", help="column titles (default: the folder names)")
    p.add_argument("--title", default="loupe runs")
    p.set_defaults(run=run)


def run_names(runs: list[Path], names: list[str] | None) -> dict[str, Path]:
    """Column title -> run folder; folders with equal names get their parent's name too."""
    if names is not None:
        if len(names) != len(runs):
            raise UserError(f"--names gives {len(names)} titles for {len(runs)} runs")
        titles = list(names)
    else:
        titles = [r.resolve().name for r in runs]
        if len(set(titles)) != len(titles):
            titles = [f"{r.resolve().parent.name}/{r.resolve().name}" for r in runs]
    if len(set(titles)) != len(titles):
        raise UserError(f"two runs have the same title ({', '.join(titles)}); give --names")
    return dict(zip(titles, runs, strict=True))


def run(args: argparse.Namespace) -> int:
    from loupe.reports import write_html_report

    for folder in args.runs:
        if not folder.is_dir():
            raise UserError(f"{folder}: run folder not found")
        if not (folder / "report.md").is_file():
            raise UserError(f"{folder}: not an evaluation run (no report.md; write one with "
                            "loupe evaluate --out)")
    write_html_report(args.out, run_names(args.runs, args.names), title=args.title)
    print(f"report: {args.out} ({len(args.runs)} runs)")
    return 0
