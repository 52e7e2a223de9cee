"""The test halves' tables for docs/shuffle-saliency.md, from bench/shuffle_test.py's
results (``results-crf-extended.json`` where CAM + CRF was extended, else ``results.json``).

    python bench/shuffle_test_report.py --work /work/runs-shuffle/test --sets coco cats loop
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from study_eval import interval_cell

ROWS = (("cam", "0"), ("gradcam", "0"), ("saliency", "0"), ("saliency", "0.02"),
        ("smoothgrad-T32", "0"), ("smoothgrad-T32", "0.02"), ("shuffle-T32", "0"),
        ("shuffle-T32", "0.02"), ("baseline-gaussian", "0"), ("baseline-background", "0"))
NAMES = {("shuffle-T32", "0"): "shuffle, previous default (T=32, raw)",
         ("shuffle-T32", "0.02"): "**shuffle, chosen default (T=32, smooth 0.02)**"}


def table(data: dict) -> str:
    crf = data["rows"]["cam+crf"]
    lines = ["| method | smoothing | best mIoU (thr) | @0.15 | spread 0.1-0.6 | minus CAM | "
             "minus CAM + CRF |", "|---|---|---|---|---|---|---|",
             f"| CAM + CRF (thresholds {crf['thresholds'][0]:g}-{crf['thresholds'][-1]:g}) | "
             f"| {crf['best']:.1f} ({crf['threshold']:.2f}) | | | | |"]
    for name, f in ROWS:
        row = data["rows"].get(f"{name}@{f}")
        if row is None:
            continue
        label = NAMES.get((name, f), name)
        lines.append(f"| {label} | {f} | {row['best']:.1f} ({row['threshold']:.2f}) | "
                     f"{row['fixed']['0.15']:.1f} | {row['spread']:.1f} | "
                     f"{interval_cell(row.get('vs_cam', {}).get('best'))} | "
                     f"{interval_cell(row.get('vs_crf'))} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path("/work/runs-shuffle/test"))
    p.add_argument("--sets", nargs="+", default=["coco", "cats", "loop"])
    args = p.parse_args()
    for name in args.sets:
        folder = args.work / name
        path = folder / "results-crf-extended.json"
        path = path if path.is_file() else folder / "results.json"
        data = json.loads(path.read_text())
        print(f"#### {name} (test: {data['images']} images; {path.name})\n\n{table(data)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
