"""From a :class:`~loupe.evaluation.tally.Tally` to the results of ``loupe evaluate``: sweep
summaries, per-class figures at each method's threshold, bootstrap intervals and paired
comparisons, WSOL figures; :func:`build_results` assembles ``results.json``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from loupe.evaluation.sources import Source
from loupe.evaluation.tally import Tally, per_image_confusions
from loupe.mapsets.guesses import maps_topk
from loupe.metrics import (
    bootstrap_miou_ci,
    bootstrap_miou_difference,
    default_cam_thresholds,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    pxap_from_counts,
    recall_per_class,
    summarize_localization,
    sweep_summary,
)
from loupe.metrics.localization import localization_errors

logger = logging.getLogger(__name__)


def _nan_to_none(values: torch.Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def _per_class(tally: Tally, values: torch.Tensor) -> dict[str, float | None]:
    """Class name -> value (None for NaN), the ignored classes left out."""
    return {name: value for c, (name, value) in
            enumerate(zip(tally.class_names, _nan_to_none(values), strict=True))
            if c not in tally.ignored}


def method_results(
    tally: Tally, sources: Sequence[Source], thresholds: Sequence[float], *,
    fixed: Sequence[float], spread_range: tuple[float, float], bootstrap: int, seed: int,
    level: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per method: the sweep summary (maps), figures at its best threshold (or of its masks),
    a bootstrap interval of its mIoU; and the paired bootstrap comparisons (each method
    against the best one, and against every baseline)."""
    methods: dict[str, Any] = {}
    chosen: dict[str, torch.Tensor] = {}  # per-image matrices at the chosen threshold
    for k, source in enumerate(sources):
        total = tally.confusions[k]
        entry: dict[str, Any] = {"folder": str(source.folder), "kind": source.kind,
                                 "method": source.method}
        if source.kind == "maps":
            summary = sweep_summary(total, thresholds, fixed, spread_range)
            entry["sweep"] = summary.as_dict()
            at = summary.thresholds.index(summary.best_threshold)
            entry["threshold"] = summary.best_threshold
        else:
            at = 0
            entry["threshold"] = None
        conf = total[at]
        entry.update(
            miou=float(mean_iou(conf)),
            pixel_accuracy=float(pixel_accuracy(conf)),
            iou=_per_class(tally, iou_per_class(conf)),
            precision=_per_class(tally, precision_per_class(conf)),
            recall=_per_class(tally, recall_per_class(conf)),
            confusion=conf.tolist(),
        )
        chosen[source.name] = per_image_confusions(tally, k, at)
        if bootstrap:
            entry["miou_interval"] = asdict(bootstrap_miou_ci(chosen[source.name], bootstrap,
                                                              seed, level))
        methods[source.name] = entry
    comparisons: list[dict[str, Any]] = []
    if bootstrap and len(sources) > 1:
        best = max(methods, key=lambda name: methods[name]["miou"])
        reasons: dict[tuple[str, str], list[str]] = {}
        for s in sources:
            if s.name != best:
                reasons.setdefault((s.name, best), []).append("best")
        for b in (s.name for s in sources if s.is_baseline):
            for s in sources:
                if s.name != b and not s.is_baseline:
                    reasons.setdefault((s.name, b), []).append("baseline")
        for (name, against), why in reasons.items():
            reason = " and ".join(why)
            interval = bootstrap_miou_difference(chosen[name], chosen[against], bootstrap,
                                                 seed, level)
            comparisons.append({"method": name, "against": against, "reason": reason,
                                **asdict(interval)})
    return methods, comparisons


def localization_results(tally: Tally, sources: Sequence[Source], iou: float) -> dict[str, Any]:
    """WSOL figures per maps source (top-1 loc, GT-known loc, MaxBoxAccV2, PxAP) and CAM's
    ILSVRC localization errors (``"ilsvrc"``, :func:`ilsvrc_errors`)."""
    results: dict[str, Any] = {}
    cam_thresholds = default_cam_thresholds()
    for k, source in enumerate(sources):
        if source.kind != "maps":
            continue
        records = [r for index in sorted(tally.pairs[k]) for r in tally.pairs[k][index]]
        entry = summarize_localization(records, cam_thresholds, iou=iou)
        counts = tally.pxap[k] if tally.pxap else None
        entry["pxap"] = pxap_from_counts(counts) if counts is not None else None
        entry["ilsvrc"] = ilsvrc_errors(tally, k, source, iou)
        results[source.name] = entry
    return results


def ilsvrc_errors(tally: Tally, k: int, source: Source, iou: float) -> dict[str, Any] | None:
    """Top-1 / top-5 localization and classification errors of CAM's ILSVRC protocol for
    source ``k`` (:func:`loupe.metrics.localization.localization_errors`): guesses are the
    maps' K best classes (``loupe maps --topk K``; only the top-1 class for maps of the
    image-level labels), the heuristic's when K >= 3. Unlike the figures beside them, the
    ignored classes (``--ignore-classes``, ``--class-map``) are left out: a class the
    classifier cannot name is no image's ground truth here. None when no pair is left."""
    images = [[r.guesses for r in tally.pairs[k][index]
               if r.guesses is not None and r.label not in tally.ignored]
              for index in sorted(tally.pairs[k])]
    if not any(images):
        return None
    topk = maps_topk(source.folder)
    max_k = topk or 1
    result = localization_errors(images, max_k=max_k, iou=iou, heuristic=max_k >= 3)
    return {**result, "guesses": f"top-{max_k}" if topk else "top-1 (label maps)"}


@dataclass(frozen=True)
class ResultOptions:
    """How ``loupe evaluate`` summarises a tally (see its ``--help``): the fixed thresholds and
    the spread range of the sweep summaries, the bootstrap, the localization IoU."""

    fixed: tuple[float, ...] = (0.1, 0.15, 0.2, 0.3)
    spread_range: tuple[float, float] = (0.1, 0.6)
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    level: float = 0.95
    boxes: bool = False
    iou: float = 0.5
    class_map: str | None = None


def build_results(tally: Tally, sources: Sequence[Source], thresholds: Sequence[float],
                  dataset: dict[str, Any], options: ResultOptions) -> dict[str, Any]:
    """The content of ``results.json``: the data set (``dataset``, its description), the
    classes, and per method its figures (:func:`method_results`) and localization
    (:func:`localization_results`)."""
    results: dict[str, Any] = {
        "dataset": dataset, "images": len(tally.ids), "num_classes": tally.num_classes,
        "class_names": list(tally.class_names), "thresholds": list(thresholds),
        "has_masks": tally.has_masks,
        "ignored_classes": [tally.class_names[c] for c in tally.ignored],
        "class_map": options.class_map or tally.class_map,
        "class_map_from": ("--class-map" if options.class_map else
                           "maps.json" if tally.class_map else None),
        "bootstrap": {"n": options.bootstrap, "seed": options.bootstrap_seed,
                      "level": options.level},
        "methods": {}, "comparisons": [],
    }
    if tally.has_masks:
        results["methods"], results["comparisons"] = method_results(
            tally, sources, thresholds, fixed=options.fixed,
            spread_range=options.spread_range, bootstrap=options.bootstrap,
            seed=options.bootstrap_seed, level=options.level,
        )
    if options.boxes:
        results["localization"] = localization_results(tally, sources, options.iou)
    return results
