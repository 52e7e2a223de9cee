"""From the evaluation pass to the comparison's results: each row's mIoU-threshold curve and
summary, paired bootstrap intervals of its difference to the reference (best against best,
the threshold re-chosen in every resample, and at the common threshold), the per-image mIoU
and the images where the methods disagree most."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from loupe.comparison.config import CompareConfig, Row
from loupe.evaluation.tally import Tally, per_image_stats
from loupe.metrics import (
    BootstrapInterval,
    ResampledCurves,
    miou_from_stats,
    resample_curves,
    sweep_summary,
)

#: How the images shown in ``overlays.png`` are chosen.
DISAGREEMENT = ("max - min over the compared methods (baselines left out) of the image's mIoU, "
                "each method at its best threshold")


@dataclass(frozen=True)
class RowTally:
    """One row's evaluation: ``confusions`` ``(T, N, N)`` summed over the images, ``stats``
    ``(I, T, 3, N)`` per image (:func:`loupe.metrics.confusion_stats`)."""

    row: Row
    confusions: torch.Tensor
    stats: torch.Tensor


@dataclass(frozen=True)
class ComparisonResults:
    """``summary``: the content of ``results.json``; ``per_image``: of ``per_image.json``."""

    summary: dict[str, Any]
    per_image: dict[str, Any]


def row_tallies(tally: Tally, rows: Sequence[Row], layout: Mapping[str, list[int]],
                thresholds: int) -> list[RowTally]:
    """Each row's matrices from the sources of the evaluation pass (``layout``: row name ->
    source indices: one maps source, or a masks source per threshold for a CRF row)."""
    out = []
    for row in rows:
        sources = layout[row.name]
        if row.crf:
            confusions = torch.cat([tally.confusions[k] for k in sources])
            stats = torch.cat([per_image_stats(tally, k, 1) for k in sources], dim=1)
        else:
            confusions = tally.confusions[sources[0]]
            stats = per_image_stats(tally, sources[0], thresholds)
        if confusions.shape[0] != thresholds:
            raise ValueError(f"{row.name}: {confusions.shape[0]} matrices for {thresholds} "
                             "thresholds")
        out.append(RowTally(row, confusions, stats))
    return out


def _interval(interval: BootstrapInterval | None, observed: float) -> dict[str, Any]:
    if interval is None:
        return {"observed": observed, "low": None, "high": None, "excludes_zero": None}
    return {**asdict(interval), "excludes_zero": interval.low > 0 or interval.high < 0}


def _row_entry(item: RowTally, config: CompareConfig) -> tuple[dict[str, Any], Any]:
    """A row's summary (and its resampled curves, None without bootstrap)."""
    r = config.results
    summary = sweep_summary(item.confusions, config.thresholds, r.fixed, r.spread_range)
    curve = miou_from_stats(item.stats.sum(0))
    if not torch.allclose(curve, torch.tensor(summary.miou, dtype=torch.float64), atol=1e-9,
                          equal_nan=True):
        raise RuntimeError(f"{item.row.name}: per-image statistics and summed matrices disagree")
    curves = (resample_curves(item.stats, r.bootstrap, r.bootstrap_seed, r.level)
              if r.bootstrap else None)
    folder = config.crf_folder(item.row, 0.0).parent if item.row.crf else (
        config.maps_folder(item.row))
    entry = {
        "kind": "maps+crf" if item.row.crf else "maps", "method": item.row.method,
        "options": item.row.options, "baseline": item.row.baseline, "folder": str(folder),
        "best_miou": summary.best_miou, "best_threshold": summary.best_threshold,
        "best_interval": _interval(curves.best(), summary.best_miou) if curves else None,
        "sweep": summary.as_dict(),
    }
    return entry, curves


def _against(entry: dict[str, Any], curves: ResampledCurves | None, ref: dict[str, Any],
             ref_curves: ResampledCurves | None, at: int) -> dict[str, Any]:
    """The differences of a row to the reference: best vs best, and at threshold ``at``."""
    miou, ref_miou = entry["sweep"]["miou"], ref["sweep"]["miou"]
    paired = curves is not None and ref_curves is not None
    return {
        "best": _interval(curves.difference(ref_curves) if paired else None,
                          entry["best_miou"] - ref["best_miou"]),
        "at": {"threshold": entry["sweep"]["thresholds"][at],
               **_interval(curves.difference(ref_curves, at) if paired else None,
                           miou[at] - ref_miou[at])},
    }


def comparison_results(tallies: Sequence[RowTally], tally: Tally, config: CompareConfig,
                       reference: str) -> ComparisonResults:
    """Every row's figures, ranked by best mIoU, with its differences to ``reference``."""
    entries, curves = {}, {}
    for item in tallies:
        entries[item.row.name], curves[item.row.name] = _row_entry(item, config)
    at = min(range(len(config.thresholds)),
             key=lambda j: abs(config.thresholds[j] - config.common_threshold))
    for name, entry in entries.items():
        entry["vs_reference"] = None if name == reference else _against(
            entry, curves[name], entries[reference], curves[reference], at)
    ranking = sorted(entries, key=lambda n: (-entries[n]["best_miou"], n))
    ranked = sorted(tallies, key=lambda t: ranking.index(t.row.name))
    per_image = per_image_results(ranked, tally.ids, config.thresholds,
                                  {n: e["best_threshold"] for n, e in entries.items()})
    spec = config.maps.dataset
    r = config.results
    summary = {
        "format": "loupe compare 1", "dataset": spec.describe(),
        "split_by_id": spec.split_by_id, "images": len(tally.ids),
        "ids": {"first": tally.ids[0], "last": tally.ids[-1]},
        "class_names": list(tally.class_names),
        "ignored_classes": [tally.class_names[c] for c in tally.ignored],
        "class_map": config.maps.class_map, "thresholds": list(config.thresholds),
        "fixed": list(r.fixed), "spread_range": list(r.spread_range),
        "common_threshold": config.thresholds[at],
        "bootstrap": {"n": r.bootstrap, "seed": r.bootstrap_seed, "level": r.level},
        "reference": reference, "ranking": ranking,
        "methods": {name: entries[name] for name in ranking},
        "disagreement": disagreement(per_image, config.overlays),
    }
    return ComparisonResults(summary, per_image)


def _plain(values: torch.Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def per_image_results(tallies: Sequence[RowTally], ids: Sequence[str],
                      thresholds: Sequence[float], best: Mapping[str, float]
                      ) -> dict[str, Any]:
    """Per row, per image: the image's mIoU (over the classes with a non-zero union in it,
    background included; None when it has no counted pixel) at the row's best threshold
    (``best``: row name -> threshold)."""
    methods = {}
    for item in tallies:
        threshold = best[item.row.name]
        at = list(thresholds).index(threshold)
        methods[item.row.name] = {
            "threshold": threshold, "baseline": item.row.baseline,
            "miou": _plain(miou_from_stats(item.stats[:, at])),
        }
    return {"ids": list(ids), "measure": "the image's mIoU at the method's best threshold",
            "methods": methods}


def disagreement(per_image: dict[str, Any], count: int) -> dict[str, Any]:
    """The ``count`` images with the largest spread of per-image mIoU across the compared
    methods (:data:`DISAGREEMENT`; all rows when fewer than two are not baselines)."""
    methods = per_image["methods"]
    names = [n for n, m in methods.items() if not m["baseline"]]
    names = names if len(names) >= 2 else list(methods)
    spreads = []
    for i in range(len(per_image["ids"])):
        values = [methods[n]["miou"][i] for n in names if methods[n]["miou"][i] is not None]
        spreads.append(max(values) - min(values) if len(values) >= 2 else None)
    order = sorted((i for i, s in enumerate(spreads) if s is not None),
                   key=lambda i: (-spreads[i], i))[:count]
    return {
        "measure": DISAGREEMENT, "methods": names,
        "images": [{"index": i, "id": per_image["ids"][i], "spread": spreads[i],
                    "miou": {n: methods[n]["miou"][i] for n in names}} for i in order],
    }
