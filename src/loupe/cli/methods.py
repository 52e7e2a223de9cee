"""``loupe methods``: the registered map methods, what each needs, and its paper."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from loupe.registry import get_method, list_methods

HEADER = ("name", "kind", "stochastic", "paper")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("methods", help="list the map methods", description=__doc__)
    p.add_argument("--format", choices=("table", "markdown"), default="table",
                   help="plain aligned table (default) or a Markdown table")
    p.set_defaults(run=run)


def method_rows() -> list[tuple[str, str, str, str]]:
    """One row per registered method: name, ``layer`` (reads a target layer's activations) or
    ``input`` (works on the input image only), stochastic yes/no, paper."""
    rows = []
    for name in list_methods():
        spec = get_method(name)
        rows.append((
            name,
            "layer" if spec.uses_layer else "input",
            "yes" if spec.stochastic else "no",
            spec.paper,
        ))
    return rows


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
