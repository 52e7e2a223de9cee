"""Tables and figures of the study: per data set, summaries of every variant (raw and
Gaussian-blurred), paired bootstrap differences, shuffle ablations, and mIoU-threshold plots.
Outputs: ``<work>/<set>/results.json`` and ``tables.md``; ``docs/figures/study-*.png``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
from study_eval import (
    SMOOTH_FRACTION,
    Difference,
    VariantStats,
    evaluate_folder,
    load_stats,
    paired_differences,
    percent,
    save_stats,
    summarize,
)
from study_variants import MAIN_METHODS

from loupe.data.spec import open_spec, selected_count
from loupe.io import atomic_path, write_json
from loupe.metrics import default_thresholds
from loupe.reports import plot_miou_vs_threshold

logger = logging.getLogger("study")
KINDS = ("raw", "smoothed")
MIN_IMAGES_FOR_BOOTSTRAP = 10


def ground_truth(study_set: Any) -> tuple[list[str], list[torch.Tensor], int]:
    dataset = open_spec(study_set.spec, images=False)
    count = selected_count(dataset, study_set.spec)
    masks = [dataset[i].mask for i in range(count)]
    return list(dataset.ids[:count]), masks, dataset.num_classes


def variant_stats(args: argparse.Namespace, study_set: Any) -> dict[tuple[str, str], VariantStats]:
    """(variant, kind) -> statistics, computed once and cached in ``<work>/<set>/stats``."""
    thresholds = default_thresholds()
    ids, masks, num_classes = ground_truth(study_set)
    out: dict[tuple[str, str], VariantStats] = {}
    for variant in study_set.variants:
        folder = study_set.maps_folder(args.work, variant)
        count = study_set.subset if variant.images == "subset" else len(ids)
        count = min(count, len(ids))
        if not folder.is_dir():
            logger.warning("no maps for %s/%s; left out", study_set.name, variant.name)
            continue
        for kind in KINDS:
            path = args.work / study_set.name / "stats" / f"{variant.name}.{kind}.npz"
            if path.is_file():
                out[variant.name, kind] = load_stats(path)
                continue
            value = evaluate_folder(folder, ids[:count], masks[:count], thresholds, num_classes,
                                    smooth=kind == "smoothed")
            save_stats(path, value)
            out[variant.name, kind] = value
    return out


def comparisons(args: argparse.Namespace, study_set: Any, stats: dict,
                summaries: dict) -> dict[str, list[Difference]]:
    """The paired differences the study reports, per table."""
    thresholds = [round(float(t), 6) for t in default_thresholds()]
    names = [v.name for v in study_set.variants if (v.name, "raw") in stats]
    variants = {v.name: v for v in study_set.variants}
    tables: dict[str, list[Difference]] = {}

    def diff(a: str, b: str, kind_a: str, kind_b: str | None = None) -> list[Difference]:
        sa, sb = paired_stats(stats, a, kind_a, b, kind_b or kind_a)
        return paired_differences(sa, sb, (a, b), thresholds, args.common_threshold,
                                  n=args.bootstrap, seed=0)

    for kind in KINDS:
        methods = [n for n in names if variants[n].group != "ablation"]
        full = [n for n in methods if variants[n].images == "all"]
        best = max(full, key=lambda n: summaries[n, kind].best_miou)
        rows: list[Difference] = []
        for against in dict.fromkeys([best, "shuffle", "baseline-gaussian"]):
            if against not in names:
                continue
            rows += [d for n in methods if n != against for d in diff(n, against, kind)]
        tables[f"methods-{kind}"] = rows
        # each shuffle variant against its reference; a CAM-based one also against that CAM
        tables[f"ablations-{kind}"] = [
            d for n in names if variants[n].reference in names
            for against in [variants[n].reference, *_base_of(variants[n], names)]
            for d in diff(n, against, kind)
        ]
    tables["smoothing"] = [
        d for n in names if variants[n].group != "ablation"
        for d in diff(n, n, "smoothed", "raw")
    ]
    return tables


def _base_of(variant: Any, names: list[str]) -> list[str]:
    """The map method a shuffle variant is built on (``base=...``), when it was run too."""
    bases = [o.split("=", 1)[1] for o in variant.options if o.startswith("base=")]
    return [b for b in bases if b in names]


def paired_stats(stats: dict, a: str, kind_a: str, b: str,
                 kind_b: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics of ``(a, kind_a)`` and ``(b, kind_b)`` on the images both cover."""
    sa, sb = stats[a, kind_a], stats[b, kind_b]
    ids = [i for i in sa.ids if i in set(sb.ids)]
    return sa.subset(ids), sb.subset(ids)


def _cell(d: Difference) -> str:
    mark = {"a wins": " **>0**", "b wins": " **<0**", "includes 0": ""}[d.verdict]
    return f"{d.observed:+.1f} [{d.low:+.1f}, {d.high:+.1f}]{mark}"


def _difference_table(rows: list[Difference], common: float, label_b: str = "against") -> str:
    pairs: dict[tuple[str, str], dict[str, Difference]] = {}
    for d in rows:
        pairs.setdefault((d.a, d.b), {})[d.at] = d
    lines = [f"| method | {label_b} | images | at own best thresholds | at {common:g} |",
             "|---|---|---|---|---|"]
    for (a, b), cells in pairs.items():
        best, fixed = cells["best"], cells[f"{common:g}"]
        lines.append(f"| {a} | {b} | {best.images} | {_cell(best)} | {_cell(fixed)} |")
    return "\n".join(lines) + "\n"


def condensed_table(rows: list[Difference], pairs: list[tuple[str, str]], common: float) -> str:
    """One row per ``(a, b)`` pair, four cells: raw and smoothed, each at own best
    thresholds and at ``common`` (rows lists differences of both kinds, see
    :func:`comparisons`; pairs without a result are left out)."""
    cells = {(d.a, d.b, kind, d.at): d for kind, part in rows for d in part}
    head = ["method", "minus", "images", "raw, own best", f"raw, at {common:g}",
            "smoothed, own best", f"smoothed, at {common:g}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a, b in pairs:
        keys = [(a, b, kind, at) for kind in KINDS for at in ("best", f"{common:g}")]
        if not all(k in cells for k in keys):
            continue
        lines.append(f"| {a} | {b} | {cells[keys[0]].images} | "
                     + " | ".join(_cell(cells[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main_table(study_set: Any, summaries: dict, stats: dict, common: float,
               ablations: bool = False) -> str:
    head = ["method", "options", "images"]
    for kind in KINDS:
        head += [f"{kind}: best mIoU", "thr", f"@{common:g}", "spread 0.1-0.6"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in study_set.variants:
        if (v.name, "raw") not in summaries or (v.group == "ablation") != ablations:
            continue
        cells = [v.name, f"`{v.describe()}`", str(len(stats[v.name, "raw"].ids))]
        for kind in KINDS:
            s = summaries[v.name, kind]
            cells += [percent(s.best_miou), f"{s.best_threshold:.2f}",
                      percent(s.fixed[common]), percent(s.spread)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(args: argparse.Namespace, study_set: Any) -> None:
    """results.json and tables.md of one data set."""
    stats = variant_stats(args, study_set)
    thresholds = default_thresholds()
    summaries = {key: summarize(value, thresholds) for key, value in stats.items()}
    common = args.common_threshold
    out = args.work / study_set.name
    text = [f"## {study_set.name}: mIoU (%) of pseudo-masks\n",
            f"Smoothed: Gaussian blur, sigma = {SMOOTH_FRACTION:g} x the image's shorter side, "
            "applied to the maps before the threshold rule.\n",
            main_table(study_set, summaries, stats, common),
            "\nShuffle variants:\n", main_table(study_set, summaries, stats, common, True)]
    results: dict[str, Any] = {
        "set": study_set.name, "common_threshold": common, "bootstrap": args.bootstrap,
        "smooth_fraction": SMOOTH_FRACTION,
        "summaries": {f"{n}.{k}": s.as_dict() for (n, k), s in summaries.items()},
        "images": {n: len(stats[n, "raw"].ids) for n, k in stats if k == "raw"},
    }
    images = max(len(v.ids) for v in stats.values())
    if images >= MIN_IMAGES_FOR_BOOTSTRAP:
        tables = comparisons(args, study_set, stats, summaries)
        results["differences"] = {k: [vars(d) for d in rows] for k, rows in tables.items()}
        for kind in KINDS:
            text += [f"\n### Paired differences, {kind} maps (points of mIoU, 95% interval)\n",
                     _difference_table(tables[f"methods-{kind}"], common),
                     f"\n### Shuffle variants against their reference (and their base "
                     f"method), {kind} maps\n",
                     _difference_table(tables[f"ablations-{kind}"], common)]
        text += ["\n### Smoothing: blurred minus raw, per method\n",
                 _difference_table(tables["smoothing"], common, "raw of")]
        text += ["\n### Condensed: methods\n", condensed_table(
            [(k, tables[f"methods-{k}"]) for k in KINDS],
            [(a, b) for b in _againsts(tables) for a in _firsts(tables, "methods")], common),
            "\n### Condensed: shuffle variants\n", condensed_table(
            [(k, tables[f"ablations-{k}"]) for k in KINDS],
            list(dict.fromkeys((d.a, d.b) for d in tables["ablations-raw"])), common)]
    write_json(out / "results.json", results)
    with atomic_path(out / "tables.md") as tmp:
        Path(tmp).write_text("\n".join(text), encoding="utf-8")
    logger.info("wrote %s", out / "tables.md")


def _againsts(tables: dict[str, list[Difference]]) -> list[str]:
    return list(dict.fromkeys(d.b for k in KINDS for d in tables[f"methods-{k}"]))


def _firsts(tables: dict[str, list[Difference]], prefix: str) -> list[str]:
    return list(dict.fromkeys(d.a for k in KINDS for d in tables[f"{prefix}-{k}"]))


def write_figures(args: argparse.Namespace, sets: list[Any]) -> None:
    """One mIoU-threshold plot per data set and kind (main methods on all images)."""
    figures = args.docs / "figures"
    for study_set in sets:
        path = args.work / study_set.name / "results.json"
        if not path.is_file() or study_set.name == "voc":
            continue
        results = json.loads(path.read_text())
        full = max(results["images"].values())
        for kind in KINDS:
            curves = {}
            for name in MAIN_METHODS:
                summary = results["summaries"].get(f"{name}.{kind}")
                if summary and results["images"][name] == full:
                    curves[name] = (summary["thresholds"], summary["miou"])
            plot_miou_vs_threshold(
                figures / f"study-{study_set.name}-{kind}.png", curves,
                title=f"{study_set.name} ({full} images), {kind} maps")
    cli_results = args.work / "coco" / "cli" / "evaluate-all" / "results.json"
    if cli_results.is_file():
        # The curves of loupe evaluate's own plot, less the three CAM variants that coincide
        # with Grad-CAM on this network: matplotlib's colour cycle repeats after 10 lines.
        methods = json.loads(cli_results.read_text())["methods"]
        curves = {name: (m["sweep"]["thresholds"], m["sweep"]["miou"])
                  for name, m in methods.items()
                  if "sweep" in m and name not in ("cam", "xgradcam", "hirescam")}
        plot_miou_vs_threshold(figures / "results-coco128-miou.png", curves,
                               title="coco128 (106 images), loupe evaluate")
