"""Interleaved timing: every implementation called once per round, so that whatever else the
machine does in a round weighs on all of them alike, and per-round ratios with a bootstrap
interval of their median (speed.py's paired column, perturb_ab.py).

Each implementation's hooks are attached only around its own calls: a call's context (a peer
extractor that registers hooks on the model) is entered before the clock starts and left after
it stops, so no implementation pays for another's hooks, and none pays for building itself.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch

Call = Callable[[], object]
# A factory of a context manager that yields the call to time (entered once per timed call).
Entry = Callable[[], contextlib.AbstractContextManager[Call]]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_call(fn: Call, device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call of ``fn``, the device synchronised on both
    sides."""
    synchronize(device)
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu


def interleaved(entries: dict[str, Entry], repeats: int, warmup: bool, device: torch.device,
                failed: Callable[[str, Exception], None]) -> dict[str, list[tuple[float, float]]]:
    """``{name: [(wall, cpu) seconds per call] * repeats}`` with round ``r`` calling the
    implementations in the order of ``entries`` rotated by ``r`` (after one untimed call of
    each when ``warmup``). An implementation whose call raises is reported to
    ``failed(name, error)`` and left out of the later rounds (its times so far are dropped)."""
    live = list(entries)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in entries}

    def attempt(name: str, timed: bool) -> None:
        try:
            with entries[name]() as fn:
                seconds = one_call(fn, device)
        except Exception as error:  # reported, not fatal: the other rows still get timed
            live.remove(name)
            samples.pop(name)
            failed(name, error)
            return
        if timed:
            samples[name].append(seconds)

    for name in list(live) if warmup else []:
        attempt(name, timed=False)
    for r in range(repeats):
        order = list(live)
        for name in order[r % len(order):] + order[: r % len(order)] if order else []:
            attempt(name, timed=True)
    return samples


def median_interval(ratios: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of the per-pair ratios (seeded)."""
    values = torch.tensor(ratios, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(ratios), (n, len(ratios)), generator=g)
    medians = values[rows].median(1).values
    return float(medians.quantile(0.025)), float(medians.quantile(0.975))


def round_ratios(peer: list[tuple[float, float]], ours: list[tuple[float, float]],
                 clock: int = 1) -> list[float]:
    """The peer's seconds over ours (``clock`` 1: CPU, 0: wall) in each round."""
    return [p[clock] / o[clock] for p, o in zip(peer, ours, strict=True) if o[clock] > 0]


def paired_ratio(peer: list[tuple[float, float]], ours: list[tuple[float, float]],
                 clock: int = 1) -> tuple[float, float, float]:
    """Median over rounds of :func:`round_ratios`, and its 95% interval."""
    ratios = round_ratios(peer, ours, clock)
    return (statistics.median(ratios), *median_interval(ratios))


def median_cpu_ms(samples: list[tuple[float, float]]) -> float:
    """The median CPU milliseconds of one implementation's (wall, CPU) seconds per round."""
    return 1e3 * statistics.median(c for _, c in samples)
