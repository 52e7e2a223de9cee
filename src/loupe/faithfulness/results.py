"""The table of a faithfulness run: for every method and metric the mean over images with a
percentile bootstrap interval (``results.json``), and the same as Markdown (``faithfulness.md``).

The bootstrap resamples images. Its draws depend only on the number of images and the seed
(:func:`~loupe.metrics.bootstrap.bootstrap_mean_ci`), so every method of a run is resampled
with the same draws (paired), as :func:`~loupe.metrics.faithfulness.faithfulness_table` does.
Images where a metric is undefined (a pointing game on an empty region) are left out of that
metric's mean, for every method alike.

With a reference row (``--reference``; by default the centre-bias baseline when it is a row)
each other method also gets, per metric, the mean of its per-image difference to the
reference with a bootstrap interval of that mean: paired, since both values of a pair come
from the same image (images where either is undefined are left out of that pair's mean). A
method is better or worse than the reference only where that interval excludes 0."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from loupe.faithfulness.config import FORMAT, FaithfulnessConfig, MethodRow, reference_row
from loupe.metrics.bootstrap import bootstrap_mean_ci
from loupe.metrics.faithfulness import METRICS


def faithfulness_results(config: FaithfulnessConfig, rows: Sequence[MethodRow],
                         records: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                         settings: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``results.json``: the table (one entry per method and metric: mean,
    interval, images with a value), the run time of each method, and the per-image values."""
    ids = list(records[0]["ids"])
    for row, record in zip(rows, records, strict=True):
        if list(record["ids"]) != ids:
            raise ValueError(f"methods/{row.slug}.json covers other images than "
                             f"methods/{rows[0].slug}.json; delete it to recompute")
    table = [_cell(row.name, metric, values_tensor(record["values"][metric]), config)
             for row, record in zip(rows, records, strict=True) for metric in metrics]
    reference = reference_row(rows, config.reference)
    return {
        "format": FORMAT,
        "settings": dict(settings),
        "images": len(ids),
        "methods": [row.name for row in rows],
        "metrics": list(metrics),
        "higher_is_better": {m: METRICS[m].higher_is_better for m in metrics},
        "bootstrap": {"n": config.bootstrap, "seed": config.bootstrap_seed,
                      "level": config.level},
        "table": table,
        "reference": reference.name if reference else None,
        "differences": _differences(config, rows, records, metrics, reference),
        "seconds": {row.name: record["seconds"] for row, record in zip(rows, records,
                                                                        strict=True)},
        "ids": ids,
        "targets": [list(t) for t in records[0]["targets"]],
        "per_image": {row.name: {m: list(record["values"][m]) for m in metrics}
                      for row, record in zip(rows, records, strict=True)},
    }


def _differences(config: FaithfulnessConfig, rows: Sequence[MethodRow],
                 records: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                 reference: MethodRow | None) -> list[dict[str, Any]]:
    """One cell per method other than ``reference`` and metric: the mean of the per-image
    differences ``method - reference`` with its bootstrap interval (empty without a
    reference)."""
    if reference is None:
        return []
    base = records[list(rows).index(reference)]["values"]
    return [_cell(row.name, metric, values_tensor(record["values"][metric])
                  - values_tensor(base[metric]), config)
            for row, record in zip(rows, records, strict=True) if row is not reference
            for metric in metrics]


def values_tensor(values: Sequence[float | None]) -> torch.Tensor:
    """``(I,)`` float64 per-image values of a JSON list; None (undefined) becomes NaN."""
    return torch.tensor([math.nan if v is None else float(v) for v in values],
                        dtype=torch.float64)


def _cell(method: str, metric: str, values: torch.Tensor, config: FaithfulnessConfig
          ) -> dict[str, Any]:
    finite = values[~torch.isnan(values)]
    cell: dict[str, Any] = {"method": method, "metric": metric, "mean": None, "low": None,
                            "high": None, "images": int(finite.numel())}
    if finite.numel():
        cell["mean"] = float(finite.mean())
        if config.bootstrap:
            interval = bootstrap_mean_ci(finite, config.bootstrap, config.bootstrap_seed,
                                         config.level)
            cell.update(low=interval.low, high=interval.high)
    return cell


def faithfulness_markdown(results: Mapping[str, Any]) -> str:
    """``faithfulness.md``: one row per method, one column per metric (``mean [low, high]``,
    the best mean of each column in bold), and the seconds each method took."""
    metrics = list(results["metrics"])
    cells = {(c["method"], c["metric"]): c for c in results["table"]}
    best = {m: _best(m, [cells[r, m]["mean"] for r in results["methods"]]) for m in metrics}
    arrows = {m: "↑" if results["higher_is_better"][m] else "↓" for m in metrics}
    lines = ["# Faithfulness", "", _heading(results), "",
             "| method | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " | seconds |",
             "|---|" + "---:|" * (len(metrics) + 1)]
    for method in results["methods"]:
        row = [_format_cell(cells[method, m], best[m], results["images"]) for m in metrics]
        lines.append(f"| {method} | " + " | ".join(row) +
                     f" | {results['seconds'][method]:.1f} |")
    if results.get("differences"):
        lines += ["", *_difference_lines(results)]
    return "\n".join(lines) + "\n"


def _difference_lines(results: Mapping[str, Any]) -> list[str]:
    """The section of the differences to the reference: one row per other method."""
    reference, metrics = results["reference"], list(results["metrics"])
    cells = {(c["method"], c["metric"]): c for c in results["differences"]}
    lines = [f"## Against {reference}", "",
             f"Each cell: the mean over images of the method's value minus {reference}'s on "
             "the same image [paired bootstrap interval]; **bold**: better than "
             f"{reference} (the interval excludes 0), *italic*: worse (the interval excludes "
             "0); plain: no difference the images can show.", "",
             "| method | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for method in results["methods"]:
        if method != reference:
            row = [_format_difference(cells[method, m], results["higher_is_better"][m],
                                      results["images"]) for m in metrics]
            lines.append(f"| {method} | " + " | ".join(row) + " |")
    return lines


def _format_difference(cell: Mapping[str, Any], higher_is_better: bool, images: int) -> str:
    if cell["mean"] is None:
        return "n/a"
    text = _signed(cell["mean"])
    if cell["low"] is not None:
        text += f" [{_signed(cell['low'])}, {_signed(cell['high'])}]"
        above, below = cell["low"] > 0, cell["high"] < 0
        if above or below:
            text = f"**{text}**" if above == higher_is_better else f"*{text}*"
    if cell["images"] != images:
        text += f" (n={cell['images']})"
    return text


def _signed(value: float) -> str:
    """Three decimals with a sign, kept on a value that rounds to zero (so that an interval
    bound of ``+0.000`` excludes 0 and one of ``-0.000`` does not); 0 itself has none."""
    return "0.000" if value == 0 else f"{value:+.3f}"


def _heading(results: Mapping[str, Any]) -> str:
    settings, boot = results["settings"], results["bootstrap"]
    images = settings["images"]
    source = (f"data set {images['dataset']['kind']}" if "dataset" in images
              else "image files")
    model = settings["model"]
    interval = (f"[{boot['level']:.0%} percentile bootstrap interval over images, {boot['n']} "
                "resamples]" if boot["n"] else "(no bootstrap)")
    return (f"{results['images']} images ({source}, resized to {settings['size']}x"
            f"{settings['size']}), targets: {settings['targets']['rule']}; model "
            f"{model['model']}" + (f" ({model['weights']})" if model["weights"] else "") +
            f"; score: {settings['score']}. Each cell: mean over images {interval}; "
            "↑ higher is better, ↓ lower is better; the best mean of each column in bold.")


def _best(metric: str, means: Sequence[float | None]) -> float | None:
    known = [m for m in means if m is not None]
    if not known:
        return None
    return max(known) if METRICS[metric].higher_is_better else min(known)


def _number(value: float) -> str:
    """Three decimals, without a minus sign on a value that rounds to zero."""
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _format_cell(cell: Mapping[str, Any], best: float | None, images: int) -> str:
    if cell["mean"] is None:
        return "n/a"
    text = _number(cell["mean"])
    if best is not None and text == _number(best):
        text = f"**{text}**"
    if cell["low"] is not None:
        text += f" [{_number(cell['low'])}, {_number(cell['high'])}]"
    if cell["images"] != images:
        text += f" (n={cell['images']})"
    return text
