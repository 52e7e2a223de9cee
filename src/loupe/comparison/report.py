"""The files of a comparison folder: ``results.json``, ``per_image.json``, ``compare.md`` (the
ranked table and the images where the methods disagree most), ``miou_vs_threshold.png``,
``overlays.png`` and ``compare.html`` (the table, the plot and the overlays in one
self-contained page). Every file is written atomically."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loupe.comparison.config import CompareConfig
from loupe.comparison.results import ComparisonResults, RowTally
from loupe.data.spec import open_spec
from loupe.evaluation import Source
from loupe.evaluation.report import write_overlays
from loupe.io import atomic_path, write_json
from loupe.reports import plot_miou_vs_threshold, write_html_page

logger = logging.getLogger(__name__)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _points(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:+.1f}"


def _difference(d: dict[str, Any] | None) -> list[str]:
    """The cells of one difference to the reference: the points and the interval, marked
    ``*`` where it excludes 0."""
    if d is None:
        return ["reference", ""]
    if d["low"] is None:
        return [_points(d["observed"]), "-"]
    mark = " *" if d["excludes_zero"] else ""
    return [_points(d["observed"]), f"[{_points(d['low'])}, {_points(d['high'])}]{mark}"]


def ranked_table(summary: dict[str, Any]) -> str:
    """The ranked Markdown table of ``results.json``'s content."""
    fixed = [f"{t:g}" for t in summary["fixed"]]
    lo, hi = summary["spread_range"]
    ref, common = summary["reference"], summary["common_threshold"]
    level = f"{100 * summary['bootstrap']['level']:g}%"
    header = (["rank", "method", "best mIoU (%)", "threshold"]
              + [f"mIoU@{t} (%)" for t in fixed]
              + [f"spread {lo:g}-{hi:g} (points)", f"best - {ref} (points)", f"{level} interval",
                 f"@{common:g} - {ref} (points)", f"{level} interval"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, name in enumerate(summary["ranking"], 1):
        m = summary["methods"][name]
        sweep = m["sweep"]
        against = m["vs_reference"]
        cells = ([str(rank), name, _pct(m["best_miou"]), f"{m['best_threshold']:.2f}"]
                 + [_pct(sweep["fixed"].get(t)) for t in fixed]
                 + [f"{100 * sweep['spread']:.1f}"]
                 + _difference(against["best"] if against else None)
                 + _difference(against["at"] if against else None))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def head_markdown(summary: dict[str, Any]) -> str:
    """Title, what was compared, the ranked table and how to read it."""
    data = summary["dataset"]
    boot = summary["bootstrap"]
    ignored = summary["ignored_classes"]
    lines = [
        f"# loupe compare: {' '.join(filter(None, [data['kind'], data.get('split')]))}, "
        f"{summary['split_by_id']} ({summary['images']} images, {summary['ids']['first']} .. "
        f"{summary['ids']['last']})", "",
        ranked_table(summary),
        f"Ranked by best mIoU (each method at its best background threshold on these images). "
        f"Differences to {summary['reference']} in mIoU points: best against best (the "
        f"threshold re-chosen in every resample) and both at {summary['common_threshold']:g}; "
        f"paired percentile bootstrap over the images, {boot['n']} resamples, seed "
        f"{boot['seed']}; * marks an interval that excludes 0. Spread: max - min of mIoU over "
        "the thresholds in the range. Rows ending in +crf are that method's pseudo-masks "
        "refined by the dense CRF at each threshold.", "",
    ]
    if ignored:
        lines += [f"Classes left out of the scores: {', '.join(ignored)}.", ""]
    return "\n".join(lines)


def disagreement_markdown(summary: dict[str, Any]) -> str:
    """The images where the methods disagree most, with each method's mIoU on them."""
    info = summary["disagreement"]
    if not info["images"]:
        return ""
    names = info["methods"]
    lines = ["## Images where the methods disagree most", "",
             f"Disagreement: {info['measure']}. Rows in the order of overlays.png.", "",
             "| image | spread (points) | " + " | ".join(f"{n} (%)" for n in names) + " |",
             "|" + "---|" * (len(names) + 2)]
    for image in info["images"]:
        lines.append(f"| {image['id']} | {100 * image['spread']:.1f} | "
                     + " | ".join(_pct(image["miou"][n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(out: Path, results: ComparisonResults, tallies: Sequence[RowTally],
                     config: CompareConfig) -> None:
    """Every file of the comparison folder (see the module docstring)."""
    summary = results.summary
    write_json(out / "results.json", summary)
    write_json(out / "per_image.json", results.per_image)
    head, tail = head_markdown(summary), disagreement_markdown(summary)
    with atomic_path(out / "compare.md") as tmp:
        Path(tmp).write_text(head + ("\n" + tail if tail else ""), encoding="utf-8")
    curves = {name: (summary["methods"][name]["sweep"]["thresholds"],
                     summary["methods"][name]["sweep"]["miou"]) for name in summary["ranking"]}
    plot = out / "miou_vs_threshold.png"
    plot_miou_vs_threshold(plot, curves)
    overlays = out / "overlays.png"
    sections: list[str | Path] = [head, plot, tail]
    if _write_overlays(out, summary, tallies, config):
        sections.append(overlays)
    else:
        overlays.unlink(missing_ok=True)
    write_html_page(out / "compare.html", title="loupe compare", sections=sections)


def _write_overlays(out: Path, summary: dict[str, Any], tallies: Sequence[RowTally],
                    config: CompareConfig) -> bool:
    """``overlays.png`` of the images where the methods disagree most (image, ground truth,
    each compared method's mask at its best threshold); False when there is none to show."""
    picks = [image["index"] for image in summary["disagreement"]["images"]]
    shown = set(summary["disagreement"]["methods"])
    sources, thresholds = [], {}
    for name in summary["ranking"]:
        row = next(t.row for t in tallies if t.row.name == name)
        if name not in shown:
            continue
        best = summary["methods"][name]["best_threshold"]
        folder = config.crf_folder(row, best) if row.crf else config.maps_folder(row)
        sources.append(Source(name, folder, "masks" if row.crf else "maps", row.method))
        thresholds[name] = best
    if not picks or not sources:
        return False
    try:
        dataset = open_spec(config.maps.dataset, images=True)
        return write_overlays(out, dataset, list(dataset.ids), sources, thresholds,
                              len(picks), picks=picks)
    except (FileNotFoundError, ValueError) as error:
        logger.warning("no overlays.png: %s", error)
        return False
