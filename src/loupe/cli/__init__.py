"""The ``loupe`` command. Each subcommand lives in its own module of this package, exposing
``add_parser(subparsers)`` and ``run(args) -> int``; the parsers import no torch (the library
is imported when a command runs), so help and argument errors answer at once.

:func:`main` owns the terminal: user errors are one line and exit status 2; a file the system
refuses (a read-only folder, a full disk, a path that is a file) is one line naming the path
and exit status 1; never a traceback for these. Log lines carry no rank prefix in a single
process, and each warning is printed once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from loupe import __version__

# Subcommand name -> module in loupe.cli. Modules are imported only when present.
SUBCOMMANDS = {
    "methods": "methods",
    "explain": "explain",
    "train": "train",
    "maps": "maps",
    "masks": "masks",
    "evaluate": "evaluate",
    "compare": "compare",
    "faithfulness": "faithfulness",
    "report": "report",
    "train-seg": "train_seg",
    "train-amn": "train_amn",
    "predict": "predict",
    "demo": "demo",
}

DESCRIPTION = """\
loupe: where an image classifier looks, and how well that segments.

Class activation maps and gradient saliency for PyTorch classifiers (torchvision, timm, loupe's
own training runs), without retraining; pseudo-masks from those maps; and their evaluation
with the protocols of weakly-supervised semantic segmentation (mIoU across the whole
background-threshold range, bootstrap intervals between methods) and of object localization.
Everything runs offline; the data-set commands resume and run under torchrun."""

EPILOG = """\
Run 'loupe COMMAND --help' for a command's options and examples.

examples:
  loupe explain photo.jpg --model resnet50 --weights IMAGENET1K_V1 --topk 2 --out out/
  loupe maps --dataset voc --root VOCdevkit --model runs/cls --method gradcam --out runs/maps
  loupe compare --dataset voc --root VOCdevkit --model runs/cls --methods cam gradcam shuffle \\
      --split-by-id dev --out runs/compare
  loupe demo --size small --out runs/demo"""


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument as one line (no usage block): ``loupe maps: error:
    argument --size: expected an integer >= 1, got '0' (see loupe maps --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="loupe", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"loupe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                       title="commands, in the order of the WSSS loop")
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(f"loupe.cli.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"loupe.cli.{module_name}":
                continue
            raise
        module.add_parser(subparsers)
    return parser


def console() -> NoReturn:
    """The ``loupe`` executable and ``python -m loupe``: :func:`main` in a process of its own,
    so with the command's malloc settings (:func:`loupe.cli.allocator.tune_malloc`)."""
    from loupe.cli.allocator import tune_malloc

    tune_malloc()
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (argparse's 2 for a bad argument, 0 after --help)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version or a bad argument (already printed)
        return done.code if isinstance(done.code, int) else 2
    with terminal_logging(args.verbose):
        try:
            return int(args.run(args) or 0)
        except (UserError, FileNotFoundError, ValueError) as error:
            return fail(args, error_line(error, args), 2)
        except OSError as error:
            return fail(args, error_line(error, args), 1)
        except KeyboardInterrupt:
            print(f"loupe {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            if not is_image_too_large(error):
                raise
            return fail(args, f"an image is too large to read safely ({error})", 2)


def fail(args: argparse.Namespace, message: str, status: int) -> int:
    print(f"loupe {args.command}: error: {message}", file=sys.stderr)
    return status


def error_line(error: BaseException, args: argparse.Namespace) -> str:
    """One line for an error: an OSError as ``PATH: problem`` (the command's ``--out`` when
    the error names no file), anything else as its message."""
    if isinstance(error, OSError) and error.strerror:
        path = error.filename or getattr(args, "out", None)
        second = f" -> {error.filename2}" if error.filename2 else ""
        return f"{path}{second}: {error.strerror}" if path else error.strerror
    return " ".join(str(error).split()) or type(error).__name__


def is_image_too_large(error: BaseException) -> bool:
    """PIL's DecompressionBombError (PIL is only looked up when something imported it)."""
    image = sys.modules.get("PIL.Image")
    return image is not None and isinstance(error, image.DecompressionBombError)


class OncePerMessage(logging.Filter):
    """Lets each distinct warning (logger, level, text) through once per command."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class RankFormatter(logging.Formatter):
    """``message``, with ``rank N: `` in front only under torchrun with several processes, and
    ``warning: `` in front of warnings."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1:
            text = f"rank {os.environ.get('RANK', '0')}: {text}"
        return text


@contextmanager
def terminal_logging(verbose: bool) -> Iterator[None]:
    """The command's log lines on stderr (see :class:`RankFormatter`, :class:`OncePerMessage`),
    Python warnings as one ``warning:`` line each; restored on exit (tests call main often).
    Where logging is configured already (an application or pytest calling :func:`main`), its
    handlers are kept and only the level is set, as ``logging.basicConfig`` would."""
    root = logging.getLogger()
    handler = None
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(RankFormatter("%(message)s"))
        handler.addFilter(OncePerMessage())
        root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _warning_line
        try:
            yield
        finally:
            if handler is not None:
                root.removeHandler(handler)
            root.setLevel(old_level)


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    logging.getLogger("py.warnings").warning("%s", message)
