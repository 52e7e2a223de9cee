"""The ``loupe`` command. Each subcommand lives in its own module of this package, exposing
``add_parser(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from loupe import __version__

# Subcommand name -> module in loupe.cli. Modules are imported only when present.
SUBCOMMANDS = {
    "methods": "methods",
    "explain": "explain",
    "maps": "maps",
    "masks": "masks",
    "evaluate": "evaluate",
    "compare": "compare",
    "faithfulness": "faithfulness",
    "report": "report",
    "train": "train",
    "train-seg": "train_seg",
    "predict": "predict",
    "demo": "demo",
}


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loupe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"loupe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(f"loupe.cli.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"loupe.cli.{module_name}":
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s"
    )
    try:
        return int(args.run(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as error:
        print(f"loupe {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"loupe {args.command}: interrupted", file=sys.stderr)
        return 130
