"""bench/paired.py: the interleaved timing of bench/speed.py (rotation, hooks only around an
implementation's own calls, failures) and its paired ratio with a bootstrap interval."""

from __future__ import annotations

import contextlib
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import paired  # noqa: E402

CPU = torch.device("cpu")


def _entries(log: list[str], names: str) -> dict[str, paired.Entry]:
    def entry(name: str) -> paired.Entry:
        @contextlib.contextmanager
        def opened():
            log.append(f"enter {name}")
            yield lambda: log.append(name)
            log.append(f"exit {name}")

        return opened

    return {name: entry(name) for name in names}


def test_rounds_rotate_and_each_call_is_inside_its_own_context():
    log: list[str] = []
    samples = paired.interleaved(_entries(log, "abc"), 3, True, CPU, lambda *_: None)
    calls = [line for line in log if " " not in line]
    assert calls == list("abc" + "abc" + "bca" + "cab")  # warm-up, then rotated rounds
    for i, line in enumerate(log):
        if " " not in line:  # a call: its own context opened just before, closed just after
            assert log[i - 1] == f"enter {line}" and log[i + 1] == f"exit {line}"
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(wall >= 0 and cpu >= 0 for v in samples.values() for wall, cpu in v)


def test_a_failing_implementation_is_reported_and_dropped():
    log: list[str] = []
    entries = _entries(log, "ab")

    @contextlib.contextmanager
    def broken():
        raise RuntimeError("no such layer")
        yield  # pragma: no cover

    entries["peer"] = broken
    failures: list[tuple[str, str]] = []
    samples = paired.interleaved(entries, 4, False, CPU,
                                 lambda who, error: failures.append((who, str(error))))
    assert failures == [("peer", "no such layer")]
    assert set(samples) == {"a", "b"} and all(len(v) == 4 for v in samples.values())


def test_paired_ratio_is_the_median_of_per_round_ratios_with_its_interval():
    ours = [(1.0, t) for t in (1.0, 2.0, 1.0, 4.0, 1.0)]
    peer = [(1.0, t) for t in (2.0, 2.0, 3.0, 4.0, 2.0)]  # per round: 2, 1, 3, 1, 2
    ratio, low, high = paired.paired_ratio(peer, ours)
    assert ratio == statistics.median([2.0, 1.0, 3.0, 1.0, 2.0]) == 2.0
    assert 1.0 <= low <= ratio <= high <= 3.0
    assert paired.paired_ratio(peer, ours, clock=0)[0] == 1.0  # wall times are all equal


def test_interval_narrows_with_more_rounds():
    g = torch.Generator().manual_seed(0)
    few = (1 + 0.1 * torch.randn(10, generator=g)).tolist()
    many = (1 + 0.1 * torch.randn(400, generator=g)).tolist()
    width = [high - low for low, high in map(paired.median_interval, (few, many))]
    assert width[1] < width[0] / 2
    low, high = paired.median_interval(many)
    assert low < statistics.median(many) < high
