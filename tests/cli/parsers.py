"""The parsers of the command line, by subcommand (shared by the CLI tests)."""

from __future__ import annotations

import argparse

from loupe.cli import build_parser


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    """Subcommand name -> its parser, in the order of ``loupe --help``."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)
