"""The ranked table of ``loupe compare`` from a hand-made results summary."""

from __future__ import annotations

from loupe.comparison import ranked_table


def _difference(observed, low=None, high=None):
    excludes = None if low is None else (low > 0 or high < 0)
    return {"observed": observed, "low": low, "high": high, "excludes_zero": excludes}


def _row(best, threshold, vs=None):
    return {"best_miou": best, "best_threshold": threshold, "vs_reference": vs,
            "sweep": {"fixed": {"0.1": best - 0.01, "0.3": best - 0.02}, "spread": 0.041}}


def test_rows_in_rank_order_with_marked_intervals_and_the_reference():
    summary = {
        "fixed": [0.1, 0.3], "spread_range": [0.1, 0.6], "reference": "cam",
        "common_threshold": 0.15, "bootstrap": {"level": 0.9},
        "ranking": ["shuffle:smooth=0.03", "cam", "baseline-gaussian"],
        "methods": {
            "shuffle:smooth=0.03": _row(0.312, 0.25, {
                "best": _difference(0.031, 0.004, 0.06),
                "at": {"threshold": 0.15, **_difference(-0.002, -0.03, 0.02)}}),
            "cam": _row(0.281, 0.4),
            "baseline-gaussian": _row(0.2, 0.3, {
                "best": _difference(-0.081), "at": {"threshold": 0.15, **_difference(-0.05)}}),
        },
    }
    lines = ranked_table(summary).splitlines()
    assert lines[0] == ("| rank | method | best mIoU (%) | threshold | mIoU@0.1 (%) | "
                        "mIoU@0.3 (%) | spread 0.1-0.6 (points) | best - cam (points) | "
                        "90% interval | @0.15 - cam (points) | 90% interval |")
    assert lines[2] == ("| 1 | shuffle:smooth=0.03 | 31.2 | 0.25 | 30.2 | 29.2 | 4.1 | +3.1 | "
                        "[+0.4, +6.0] * | -0.2 | [-3.0, +2.0] |")
    assert lines[3] == "| 2 | cam | 28.1 | 0.40 | 27.1 | 26.1 | 4.1 | reference |  | reference |  |"
    assert lines[4] == ("| 3 | baseline-gaussian | 20.0 | 0.30 | 19.0 | 18.0 | 4.1 | -8.1 | - | "
                        "-5.0 | - |")  # without bootstrap: no interval
