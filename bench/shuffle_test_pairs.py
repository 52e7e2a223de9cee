"""Paired differences of the chosen shuffle default (shuffle-T32 at smoothing 0.02) to every
other method of a test half, raw and at the same smoothing (issue 10's goal: ahead of every
other method by 3 points with the interval excluding 0).

    python bench/shuffle_test_pairs.py --work /work/runs-shuffle/test --sets coco cats loop
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_eval import interval_cell, load_stats, paired_differences  # noqa: E402

from loupe.metrics import default_thresholds  # noqa: E402

CHOSEN = "shuffle-T32@0.02"
OTHERS = ("cam", "gradcam", "saliency", "smoothgrad-T32", "shuffle-T32", "baseline-gaussian")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path("/work/runs-shuffle/test"))
    p.add_argument("--sets", nargs="+", default=["coco", "cats", "loop"])
    args = p.parse_args()
    thresholds = [round(t, 6) for t in default_thresholds().tolist()]
    print("| set | other method | smoothing | chosen default minus it, own best thresholds |")
    print("|---|---|---|---|")
    for name in args.sets:
        stats = args.work / name / "stats"
        if not (stats / f"{CHOSEN}.npz").is_file():
            continue
        chosen = load_stats(stats / f"{CHOSEN}.npz").stats
        for other in OTHERS:
            for f in ("0", "0.02"):
                key = f"{other}@{f}"
                if key == CHOSEN or not (stats / f"{key}.npz").is_file():
                    continue
                best, _ = paired_differences(chosen, load_stats(stats / f"{key}.npz").stats,
                                             (CHOSEN, key), thresholds, 0.15)
                cell = interval_cell([best.observed, best.low, best.high])
                print(f"| {name} | {other} | {f} | {cell} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
