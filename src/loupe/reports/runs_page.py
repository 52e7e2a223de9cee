"""The parts of the HTML page of several ``loupe evaluate`` runs (their ``results.json``): one
merged table of every run's methods, one shared plot of their mIoU against the background
threshold, and a section per run (comparisons, localization, per-class IoU folded in a
``<details>`` with only the classes present, overlays). Everything is escaped."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loupe.reports.plots import miou_png

Results = Mapping[str, Any]

# PNG files of a run folder that the page shows with a caption of their own.
CAPTIONS = {
    "overlays.png": "sample images, their ground truth and each method's mask at its best "
                    "threshold",
}
MERGED = ("miou_vs_threshold.png",)  # drawn once for all runs at the top


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal, ``n/a`` for None or NaN."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
          strong: int | None = None, css: str = "") -> str:
    """An HTML table of escaped cells; row ``strong`` in bold (the best)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
        body.append(f'<tr class="best">{cells}</tr>' if i == strong else f"<tr>{cells}</tr>")
    css_class = f' class="{css}"' if css else ""
    return (f"<table{css_class}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            "</tbody></table>")


def dataset_line(results: Results) -> str:
    """``voc train, 1464 images`` (and the ignored classes)."""
    data = results.get("dataset", {})
    words = " ".join(str(w) for w in (data.get("kind"), data.get("split")) if w)
    line = f"{words}, {results.get('images', '?')} images"
    if results.get("ignored_classes"):
        line += f"; ignored: {', '.join(results['ignored_classes'])}"
    return line


def page_title(runs: Mapping[str, Results]) -> str:
    """A title from the runs: their data set(s) and names."""
    datasets = list(dict.fromkeys(dataset_line(r).split(";")[0] for r in runs.values()))
    return f"loupe evaluation: {' | '.join(datasets)} ({', '.join(runs)})"


def merged_rows(runs: Mapping[str, Results]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the merged table, best mIoU first; a run column only with
    several runs."""
    fixed = sorted({k for r in runs.values() for m in r["methods"].values()
                    for k in m.get("sweep", {}).get("fixed", {})}, key=float)
    several = len(runs) > 1
    level = next((m["miou_interval"]["level"] for r in runs.values()
                  for m in r["methods"].values() if m.get("miou_interval")), None)
    header = (["run"] if several else []) + ["method", "mIoU", "thr."] + (
        [f"{100 * level:g}% interval"] if level else []) + [
        f"@{k}" for k in fixed] + ["spread", "prec.", "recall"]
    scored = []
    for run, results in runs.items():
        for name, m in results["methods"].items():
            sweep = m.get("sweep", {})
            interval = m.get("miou_interval")
            threshold = "-" if m.get("threshold") is None else f"{m['threshold']:.2f}"
            row = ([run] if several else []) + [name, pct(m["miou"]), threshold] + (
                [f"{pct(interval['low'])} - {pct(interval['high'])}" if interval else "-"]
                if level else []) + [pct(sweep.get("fixed", {}).get(k)) for k in fixed] + [
                pct(sweep.get("spread")), pct(_mean(m.get("precision", {}).values())),
                pct(_mean(m.get("recall", {}).values()))]
            scored.append((m["miou"] if m["miou"] is not None else -1.0, row))
    scored.sort(key=lambda item: -item[0])
    return header, [row for _, row in scored]


def merged_table(runs: Mapping[str, Results]) -> str:
    header, rows = merged_rows(runs)
    return table(header, rows, strong=0 if rows else None, css="merged")


def shared_plot(runs: Mapping[str, Results]) -> str | None:
    """The ``<img>`` of one mIoU-threshold plot of every swept method of every run (None when
    no run has maps)."""
    several = len(runs) > 1
    curves = {(f"{run}: {name}" if several else name): (m["sweep"]["thresholds"],
                                                         m["sweep"]["miou"])
              for run, results in runs.items() for name, m in results["methods"].items()
              if "sweep" in m}
    if not curves:
        return None
    data = base64.b64encode(miou_png(curves)).decode("ascii")
    return (f'<img id="shared-plot" alt="mIoU against the background threshold" '
            f'src="data:image/png;base64,{data}">')


def present_classes(results: Results) -> list[int]:
    """Indices of the classes with ground-truth pixels (rows of any method's confusion)."""
    names = results.get("class_names", [])
    for m in results["methods"].values():
        if m.get("confusion"):
            return [c for c, row in enumerate(m["confusion"]) if sum(row) > 0 and c < len(names)]
    return list(range(len(names)))


def per_class_details(results: Results) -> str:
    """A folded table of IoU per class (%) for the classes present, one column per method."""
    methods = results["methods"]
    if not methods:
        return ""
    names = results["class_names"]
    shown = [names[c] for c in present_classes(results)
             if names[c] in next(iter(methods.values()))["iou"]]
    rows = [[cls] + [pct(m["iou"].get(cls)) for m in methods.values()] for cls in shown]
    absent = len(next(iter(methods.values()))["iou"]) - len(shown)
    note = f", {absent} absent from these images left out" if absent else ""
    return (f"<details><summary>IoU per class (%) at each method's threshold: {len(shown)} "
            f"classes present{note}</summary>{table(['class', *methods], rows)}</details>")


def comparisons(results: Results) -> str:
    rows = [[c["method"], c["against"], c["reason"], pct(c["observed"]),
             f"{pct(c['low'])} to {pct(c['high'])}"] for c in results.get("comparisons", [])]
    if not rows:
        return ""
    return ("<h3>Paired bootstrap of mIoU differences (points)</h3>"
            + table(["method", "against", "why", "difference", "interval"], rows))


def localization(results: Results) -> str:
    rows = [[name, str(m["pairs"]), pct(m["top1_loc"]), pct(m["gt_known_loc"]),
             pct(m["max_box_acc_v2"]), pct(m["pxap"])]
            for name, m in (results.get("localization") or {}).items()]
    if not rows:
        return ""
    return "<h3>Localization</h3>" + table(
        ["method", "pairs", "top-1 loc (%)", "GT-known loc (%)", "MaxBoxAccV2 (%)", "PxAP (%)"],
        rows)


def figures(name: str, folder: Path, skip: Sequence[str] = MERGED) -> str:
    """The run's PNG files (except ``skip``), embedded, with captions."""
    parts = []
    for image in sorted(folder.glob("*.png")):
        if image.name in skip:
            continue
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        caption = f"{name}: {CAPTIONS.get(image.name, image.name)}"
        parts.append(f'<figure><img alt="{html.escape(caption)}" '
                     f'src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "\n".join(parts)


def run_section(name: str, folder: Path, results: Results) -> str:
    """One run: what it evaluated, its comparisons and localization, the folded per-class
    table and its overlays."""
    return "\n".join(part for part in (
        f'<section class="run"><h2>{html.escape(name)}</h2>',
        f"<p>{html.escape(dataset_line(results))}; "
        f"{len(results['methods'])} methods</p>",
        comparisons(results), localization(results), per_class_details(results),
        figures(name, folder), "</section>") if part)


def _mean(values: Any) -> float | None:
    real = [v for v in values if v is not None and not math.isnan(v)]
    return sum(real) / len(real) if real else None
