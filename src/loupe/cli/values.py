"""The checks of command-line values at parse time: argparse ``type=`` functions and actions
for numbers and output paths. A bad value exits with status 2 and ``argument --NAME: <why>``
before anything is loaded (``--size 0``, ``--threshold nan``, ``--spread-range 0.6 0.1``, an
``--out`` folder that is a file...)."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _checked(text: str, kind: type, what: str, ok: Callable[[Any], bool]) -> Any:
    """``kind(text)`` when it parses, is finite and ``ok``; else "expected <what>, got ..."."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _checked(text, int, "an integer >= 1", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _checked(text, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _checked(text, float, "a finite number > 0", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _checked(text, float, "a finite number >= 0", lambda v: v >= 0)


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    return _checked(text, float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def fraction_below_one(text: str) -> float:
    """A number in [0, 1)."""
    return _checked(text, float, "a number in [0, 1)", lambda v: 0 <= v < 1)


def positive_fraction(text: str) -> float:
    """A number in (0, 1]."""
    return _checked(text, float, "a number in (0, 1]", lambda v: 0 < v <= 1)


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    return _checked(text, float, "a number in (0, 1)", lambda v: 0 < v < 1)


SWEPT_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(20))
"""The background thresholds ``loupe evaluate`` sweeps (``loupe.metrics.default_thresholds``)."""


def swept_threshold(text: str) -> float:
    """One of :data:`SWEPT_THRESHOLDS` (0.00, 0.05, ..., 0.95)."""
    value = _checked(text, float, "one of the swept thresholds 0, 0.05, ..., 0.95",
                     lambda v: any(abs(v - t) < 1e-6 for t in SWEPT_THRESHOLDS))
    return min(SWEPT_THRESHOLDS, key=lambda t: abs(t - value))


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether it exists is checked later)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


class Ascending(argparse.Action):
    """``nargs=N`` values in strictly increasing order, e.g. ``--spread-range LO HI``; the
    error names the option. Subclasses change :attr:`rule`."""

    rule = "LO < HI"

    @staticmethod
    def in_order(a: float, b: float) -> bool:
        return a < b

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if not all(self.in_order(a, b) for a, b in zip(values, values[1:], strict=False)):
            shown = " ".join(f"{v:g}" for v in values)
            raise argparse.ArgumentError(self, f"expected {self.rule}, got {shown}")
        setattr(namespace, self.dest, list(values))


class NonDecreasing(Ascending):
    """As :class:`Ascending`, equal values allowed (``--resize-long MIN MAX``)."""

    rule = "MIN <= MAX"

    @staticmethod
    def in_order(a: float, b: float) -> bool:
        return a <= b


class NonIncreasing(Ascending):
    """Values that do not increase (``masks --confident FG BG``: BG <= FG)."""

    rule = "BG <= FG"

    @staticmethod
    def in_order(a: float, b: float) -> bool:
        return a >= b


class HueJitter(argparse.Action):
    """``--jitter B C S H``: ColorJitter's factors, hue at most 0.5 (the error names it)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values[3] > 0.5:
            raise argparse.ArgumentError(self, f"expected hue H <= 0.5, got {values[3]:g}")
        setattr(namespace, self.dest, list(values))


def output_folder(text: str) -> Path:
    """A folder to write into: not a file, and inside a folder this process may write to."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    _check_writable(path)
    return path


def output_file(text: str) -> Path:
    """A file to write: not a folder, and inside a folder this process may write to."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is a folder; name the file to write, e.g. {path / 'report.html'}")
    _check_writable(path.parent)
    return path


def _check_writable(folder: Path) -> None:
    """An ArgumentTypeError unless the nearest existing part of ``folder`` is a folder we may
    write in (the rest is created later)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{existing}: cannot write there (permission denied)")
