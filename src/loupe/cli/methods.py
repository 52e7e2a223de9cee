"""``loupe methods``: the registered map methods, what each needs, and its paper."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from loupe.cli.args import add_command
from loupe.cli.catalog import METHODS

HEADER = ("name", "kind", "stochastic", "paper")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "methods", help="list the map methods and their papers",
        description="The map methods loupe registers: name (for --method), kind (layer: reads "
        "a target layer's activations, the CAM family; input: works on the input image), "
        "whether it is stochastic (takes a seed), and its paper.",
        examples=["loupe methods", "loupe methods --format markdown > methods.md"],
    )
    p.add_argument("--format", choices=("table", "markdown"), default="table",
                   help="plain aligned table or a Markdown table")
    p.set_defaults(run=run)


def method_rows() -> list[tuple[str, str, str, str]]:
    """One row per registered method (:data:`loupe.cli.catalog.METHODS`, which a test keeps
    equal to the registry): name, ``layer`` (reads a target layer's activations) or ``input``
    (works on the input image only), stochastic yes/no, paper."""
    return [(row.name, "layer" if row.uses_layer else "input",
             "yes" if row.stochastic else "no", row.paper) for row in METHODS]


def format_table(rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Rows under :data:`HEADER` as an aligned plain-text or Markdown table."""
    table = [HEADER, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    if markdown:
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
                 for row in table]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    print(format_table(method_rows(), markdown=args.format == "markdown"))
    return 0
