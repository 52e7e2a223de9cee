"""The dev screening's tables for docs/shuffle-saliency.md, from each set's results.json.

    python bench/shuffle_dev_report.py --work /work/runs-shuffle/dev --sets coco cats loop

Prints Markdown: (1) every method at every smoothing, best mIoU per set; (2) per set, every
method raw and at the chosen smoothing: best mIoU and threshold, mIoU at 0.15, spread 0.1-0.6
and the paired difference to CAM (raw); (3) every shuffle variant minus the default at the
same smoothing, per set, with the decision rule's verdict.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from study_eval import interval_cell

FRACTIONS = ("0", "0.02", "0.04", "0.08")


def methods(results: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for data in results.values():
        for key in data["rows"]:
            name = key.rsplit("@", 1)[0]
            if name not in seen:
                seen.append(name)
    return seen


def smoothing_table(results: dict[str, Any]) -> str:
    sets = list(results)
    head = "| method | " + " | ".join(f"{s} f={f}" for s in sets for f in FRACTIONS) + " |"
    lines = [head, "|---|" + "---|" * (len(sets) * len(FRACTIONS))]
    for name in methods(results):
        cells = []
        for s in sets:
            for f in FRACTIONS:
                row = results[s]["rows"].get(f"{name}@{f}")
                cells.append(f"{row['best']:.1f}" if row else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def set_table(data: dict[str, Any], fraction: str) -> str:
    head = ("| method | options | raw: best (thr) | raw @0.15 | raw spread | raw minus CAM "
            f"| f={fraction}: best (thr) | @0.15 | spread | minus CAM (raw) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for name in methods({"x": data}):
        raw = data["rows"].get(f"{name}@0")
        smooth = data["rows"].get(f"{name}@{fraction}")
        cells = []
        for row in (raw, smooth):
            if row is None:
                cells += ["", "", "", ""]
                continue
            cells += [f"{row['best']:.1f} ({row['threshold']:.2f})", f"{row['fixed']['0.15']:.1f}",
                      f"{row['spread']:.1f}", interval_cell(row.get("vs_cam", {}).get("best"))]
        options = (raw or smooth)["options"]
        lines.append(f"| {name} | `{options}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variant_table(results: dict[str, Any], fraction: str) -> str:
    sets = list(results)
    head = ("| variant | reference | " + " | ".join(f"{s}: raw | {s}: f={fraction}" for s in sets)
            + " |")
    lines = [head, "|---|---|" + "---|" * (2 * len(sets))]
    for name in methods(results):
        cells, reference = [], ""
        for s in sets:
            for f in ("0", fraction):
                row = results[s]["rows"].get(f"{name}@{f}", {})
                reference = row.get("reference", reference)
                cells.append(interval_cell(row.get("vs_reference", {}).get("best")))
        if reference:
            lines.append(f"| {name} | {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def smoothing_gain_table(results: dict[str, Any]) -> str:
    """Smoothed minus raw, same method (decision rule 1), per set and smoothing."""
    sets = list(results)
    head = "| method | " + " | ".join(f"{s} f={f}" for s in sets for f in FRACTIONS[1:]) + " |"
    lines = [head, "|---|" + "---|" * (len(sets) * (len(FRACTIONS) - 1))]
    for name in methods(results):
        rows = [results[s]["rows"].get(f"{name}@{f}", {}) for s in sets for f in FRACTIONS[1:]]
        cells = [interval_cell(row.get("vs_raw", {}).get("best")) for row in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/work/runs-shuffle/dev"))
    p.add_argument("--sets", nargs="+", default=["coco", "cats", "loop"])
    p.add_argument("--fraction", default="0.02", choices=FRACTIONS[1:],
                   help="the smoothing of the second column group")
    args = p.parse_args(argv)
    results = {s: json.loads((args.work / s / "results.json").read_text())
               for s in args.sets if (args.work / s / "results.json").is_file()}
    print("### Best mIoU (%) by smoothing (sigma = f x shorter side)\n")
    print(smoothing_table(results) + "\n")
    print("### Smoothed minus raw, same method (best mIoU, own best thresholds)\n")
    print(smoothing_gain_table(results) + "\n")
    for s, data in results.items():
        print(f"### {s} (dev: first {data['images']} ids)\n")
        print(set_table(data, args.fraction) + "\n")
    print("### Shuffle variants minus their reference (best mIoU, own best thresholds)\n")
    print(variant_table(results, args.fraction) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
