"""``loupe report``: several evaluation runs as one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.args import add_command
from loupe.cli.values import output_file

DESCRIPTION = """\
Evaluation runs (folders written by loupe evaluate) as one self-contained HTML page: at the top
one table of every run's methods and one plot of their mIoU against the background threshold;
below, each run's tables (per-class tables folded, only the classes present) and its overlays.
Images are embedded, so the page can be moved or mailed alone."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "report", help="evaluation runs together in one HTML page",
        description=DESCRIPTION,
        examples=[
            "loupe report runs/eval --out report.html",
            "loupe report runs/eval-r50 runs/eval-cls --names ImageNet trained --title "
            "'coco128: ImageNet ResNet-50 against a trained classifier' --out report.html",
        ],
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="folders written by loupe evaluate --out")
    p.add_argument("--out", required=True, type=output_file, help="the HTML file to write")
    p.add_argument("--names", nargs="+", help="run titles (default: the folder names)")
    p.add_argument("--title", help="page title (default: the data set and the run titles)")
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
