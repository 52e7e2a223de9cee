"""Faithfulness metrics of class maps, and a table of them over images, methods and metrics.

The metrics (each returns one value per map, ``(B, K)``, so that intervals over images can
be computed; all run batched over images and perturbation steps on the images' device):

=======================  ====================================  =========  ====================
metric                   paper                                 better     forwards per map
=======================  ====================================  =========  ====================
deletion                 Petsiuk et al. 2018 (RISE)            lower      ``steps`` (20)
insertion                Petsiuk et al. 2018 (RISE)            higher     ``steps`` (20)
road_morf, road_lerf,    Rong et al. 2022 (ROAD)               lower,     2 x 9 fractions
road                                                           higher,    (shared)
                                                               higher
average_drop,            Chattopadhay et al. 2018 (Grad-CAM++) lower,     1 (shared)
increase_in_confidence                                         higher
pointing_game            Zhang et al. 2016 (Excitation BP)     higher     0 (needs regions)
energy_pointing_game     Wang et al. 2020 (Score-CAM)          higher     0 (needs regions)
randomization            Adebayo et al. 2018 (sanity checks)   lower      1 map per stage
=======================  ====================================  =========  ====================

Plus one clean forward per image, shared by all metrics of a batch. :func:`faithfulness_table`
computes the maps of several methods on a set of images and every requested metric, and
returns per-image values with bootstrap intervals of their means over images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn

from loupe.api import explain
from loupe.metrics._scoring import Scorer, pixel_ranks
from loupe.metrics.bootstrap import BootstrapInterval, bootstrap_mean_ci
from loupe.metrics.confidence import (
    ConfidenceChange,
    average_drop,
    confidence_change,
    increase_in_confidence,
)
from loupe.metrics.deletion import Curves, deletion_curves, insertion_curves
from loupe.metrics.pointing import box_regions, energy_pointing_game, pointing_game
from loupe.metrics.road import RoadScores, linear_imputation, noisy_linear_imputation, road
from loupe.metrics.sanity import (
    Randomization,
    cascade_layers,
    cascading_randomization,
    spearman,
)
from loupe.registry import get_method
from loupe.targets import Targets, TargetsLike, resolve_targets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricSpec:
    """name: the metric; group: the computation that yields it (and the key of its options
    in ``metric_options``); higher_is_better; needs_regions: needs object masks or boxes."""

    name: str
    group: str
    higher_is_better: bool
    needs_regions: bool = False


METRICS: Mapping[str, MetricSpec] = MappingProxyType({
    spec.name: spec for spec in (
        MetricSpec("deletion", "deletion", False),
        MetricSpec("insertion", "insertion", True),
        MetricSpec("road_morf", "road", False),
        MetricSpec("road_lerf", "road", True),
        MetricSpec("road", "road", True),
        MetricSpec("average_drop", "confidence", False),
        MetricSpec("increase_in_confidence", "confidence", True),
        MetricSpec("pointing_game", "pointing_game", True, needs_regions=True),
        MetricSpec("energy_pointing_game", "energy_pointing_game", True, needs_regions=True),
        MetricSpec("randomization", "randomization", False),
    )
})
GROUPS = tuple(dict.fromkeys(spec.group for spec in METRICS.values()))


def list_metrics() -> list[str]:
    """Names of the faithfulness metrics, in table order."""
    return list(METRICS)


@dataclass(frozen=True)
class _Batch:
    """What a metric group sees: the scorer (model, images, bound targets), one method's
    maps ``(B, K, H, W)``, the regions (or None) and how the maps were made."""

    scorer: Scorer
    maps: torch.Tensor
    regions: torch.Tensor | None
    method: str
    target_layer: str | None
    method_options: Mapping[str, object] = field(default_factory=dict)


def _group_values(group: str, batch: _Batch, options: Mapping[str, object]
                  ) -> dict[str, torch.Tensor]:
    """The ``(B, K)`` values of every metric of ``group``."""
    scorer, maps = batch.scorer, batch.maps
    model, images = scorer.model, scorer.images
    if group in ("deletion", "insertion"):
        curves = deletion_curves if group == "deletion" else insertion_curves
        return {group: curves(model, images, maps, scorer=scorer, **options).auc}
    if group == "road":
        scores = road(model, images, maps, scorer=scorer, **options)
        return {"road_morf": scores.morf.mean(-1), "road_lerf": scores.lerf.mean(-1),
                "road": scores.combined}
    if group == "confidence":
        change = confidence_change(model, images, maps, scorer=scorer, **options)
        return {"average_drop": change.average_drop,
                "increase_in_confidence": change.increase_in_confidence}
    if group in ("pointing_game", "energy_pointing_game"):
        assert batch.regions is not None
        game = pointing_game if group == "pointing_game" else energy_pointing_game
        return {group: game(maps, batch.regions, **options).to(images.device)}
    given = _given(scorer.targets)
    result = cascading_randomization(
        model, images, given, method=batch.method, target_layer=batch.target_layer,
        method_options=batch.method_options, every_stage=False, reference_maps=maps, **options,
    )
    return {"randomization": result.correlations[-1]}


def _given(targets: Targets) -> TargetsLike:
    return list(targets.functions) if targets.functions is not None else targets.classes


@dataclass(frozen=True)
class FaithfulnessTable:
    """methods, metrics: the rows and columns; per_image: ``(method, metric) -> (I,)``
    float64 per-image values on the CPU (the mean over an image's targets; NaN where the
    metric is undefined, e.g. an empty region); intervals: ``(method, metric) ->``
    :class:`BootstrapInterval` of the mean over the images with a value (None if none)."""

    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    per_image: Mapping[tuple[str, str], torch.Tensor]
    intervals: Mapping[tuple[str, str], BootstrapInterval | None]

    def records(self) -> list[dict[str, object]]:
        """One JSON-ready dict per (method, metric): mean, low, high, level, images used,
        and whether higher is better."""
        rows = []
        for method in self.methods:
            for metric in self.metrics:
                interval = self.intervals[method, metric]
                values = self.per_image[method, metric]
                rows.append({
                    "method": method, "metric": metric,
                    "mean": None if interval is None else interval.observed,
                    "low": None if interval is None else interval.low,
                    "high": None if interval is None else interval.high,
                    "level": None if interval is None else interval.level,
                    "images": int((~torch.isnan(values)).sum()),
                    "higher_is_better": METRICS[metric].higher_is_better,
                })
        return rows


Batch = tuple[torch.Tensor, TargetsLike, torch.Tensor | None]


def faithfulness_table(
    model: nn.Module,
    images: torch.Tensor | Iterable[Batch],
    targets: TargetsLike = None,
    *,
    methods: Sequence[str] = ("gradcam",),
    metrics: Sequence[str] | None = None,
    regions: torch.Tensor | None = None,
    target_layer: str | None = None,
    method_options: Mapping[str, Mapping[str, object]] | None = None,
    metric_options: Mapping[str, Mapping[str, object]] | None = None,
    score: str = "probability",
    batch_size: int = 16,
    chunk_size: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> FaithfulnessTable:
    """Faithfulness of several map methods on a set of images: per-method, per-metric means
    with percentile bootstrap intervals over images (paired: the same resamples for every
    method).

    Args:
        model: a classifier (or any model, with score-function targets and score="logit").
        images: ``(N, C, H, W)`` preprocessed images, run ``batch_size`` at a time, or an
            iterable of ``(images, targets, regions)`` batches (``regions`` may be None);
            then ``targets`` and ``regions`` must be None here.
        targets: for all N images (see :mod:`loupe.targets`); None = each image's top-1.
        methods: registered method names; maps are made by :func:`loupe.explain`.
        metrics: names from :func:`list_metrics`; None = all, less the pointing games when
            no regions are given.
        regions: ``(N, K, H, W)`` bool object masks (one per target) for the pointing games;
            :func:`box_regions` draws boxes.
        target_layer, method_options: ``method_options[method]`` are that method's options.
        metric_options: options per metric group (a ``MetricSpec.group``), passed to its
            function (:func:`deletion_curves`, :func:`road`, ...): ``{"deletion":
            {"steps": 50}}``.
        score: ``"probability"`` (softmax) or ``"logit"``, for every perturbation metric.
        chunk_size: perturbed images per forward (None: from the image size); n_boot, seed,
            level: the bootstrap.

    Returns:
        :class:`FaithfulnessTable`; ``.records()`` gives rows for JSON or a report.
    """
    methods, metrics = _check_table(methods, metrics, regions, images, metric_options)
    values = _table_values(
        model, _batches(images, targets, regions, batch_size), methods, metrics, score=score,
        chunk_size=chunk_size, target_layer=target_layer, method_options=method_options or {},
        metric_options=metric_options or {},
    )
    logger.info("faithfulness: %d methods x %d metrics scored", len(methods), len(metrics))
    per_image = {key: torch.cat(parts) for key, parts in values.items()}
    intervals = {key: _interval(column, n_boot, seed, level) for key, column in per_image.items()}
    return FaithfulnessTable(tuple(methods), tuple(metrics), MappingProxyType(per_image),
                             MappingProxyType(intervals))


def _table_values(
    model: nn.Module,
    batches: Iterable[Batch],
    methods: list[str],
    metrics: list[str],
    *,
    score: str,
    chunk_size: int | None,
    target_layer: str | None,
    method_options: Mapping[str, Mapping[str, object]],
    metric_options: Mapping[str, Mapping[str, object]],
) -> dict[tuple[str, str], list[torch.Tensor]]:
    """``(method, metric) ->`` per-image values ``(B,)`` of each batch."""
    values: dict[tuple[str, str], list[torch.Tensor]] = {
        (method, metric): [] for method in methods for metric in metrics}
    for batch_images, batch_targets, batch_regions in batches:
        _check_regions(metrics, batch_regions)
        scorer = Scorer(model, batch_images.to(_device(model, batch_images)), batch_targets,
                        score=score, chunk_size=chunk_size)
        for method in methods:
            options = dict(method_options.get(method, {}))
            maps = explain(model, scorer.images, _given(scorer.targets), method=method,
                           target_layer=target_layer, **options)
            batch = _Batch(scorer, maps, batch_regions, method, target_layer, options)
            for metric, value in _batch_values(batch, metrics, metric_options).items():
                values[method, metric].append(_per_image(value, scorer))
    return values


def _batch_values(batch: _Batch, metrics: list[str],
                  metric_options: Mapping[str, Mapping[str, object]]
                  ) -> dict[str, torch.Tensor]:
    """``metric -> (B, K)`` for the requested metrics, each group computed once."""
    out = {}
    for group in dict.fromkeys(METRICS[m].group for m in metrics):
        values = _group_values(group, batch, metric_options.get(group, {}))
        out.update({metric: value for metric, value in values.items() if metric in metrics})
    return out


def _check_regions(metrics: list[str], regions: torch.Tensor | None) -> None:
    if regions is None and any(METRICS[m].needs_regions for m in metrics):
        raise ValueError("the pointing games need regions for every batch")


def _per_image(values: torch.Tensor, scorer: Scorer) -> torch.Tensor:
    """``(B,)`` float64 CPU mean over each image's valid targets (NaN when it has none)."""
    values = values.double().where(scorer.valid, torch.full_like(values.double(), float("nan")))
    return values.nanmean(1).cpu()


def _interval(values: torch.Tensor, n: int, seed: int, level: float
              ) -> BootstrapInterval | None:
    finite = values[~torch.isnan(values)]
    return bootstrap_mean_ci(finite, n, seed, level) if finite.numel() else None


def _device(model: nn.Module, images: torch.Tensor) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else images.device


def _batches(
    images: torch.Tensor | Iterable[Batch],
    targets: TargetsLike,
    regions: torch.Tensor | None,
    batch_size: int,
) -> Iterable[Batch]:
    if not isinstance(images, torch.Tensor):
        if targets is not None or regions is not None:
            raise ValueError(
                "with an iterable of batches, give targets and regions inside the batches"
            )
        yield from images
        return
    count = images.shape[0]
    resolved = resolve_targets(targets, count, images.device)
    if regions is not None:
        regions = regions[:, None] if regions.dim() == 3 else regions
        if regions.shape[0] != count:
            raise ValueError(f"regions cover {regions.shape[0]} images but images has {count}")
    for start in range(0, count, batch_size):
        rows = torch.arange(start, min(start + batch_size, count), device=images.device)
        given = _given(resolved.of_rows(rows)) if resolved.bound else None
        yield images[rows], given, None if regions is None else regions[start:start + len(rows)]


def _check_table(
    methods: Sequence[str],
    metrics: Sequence[str] | None,
    regions: torch.Tensor | None,
    images: object,
    metric_options: Mapping[str, Mapping[str, object]] | None,
) -> tuple[list[str], list[str]]:
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty list of method names, got {methods!r}")
    for method in methods:
        get_method(method)  # a clear error before any work
    iterable = not isinstance(images, torch.Tensor)
    if metrics is None:
        metrics = [m for m, spec in METRICS.items()
                   if not spec.needs_regions or regions is not None or iterable]
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics must be a non-empty list of metric names, got {metrics!r}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric {unknown[0]!r}; choose from: {', '.join(METRICS)}"
        )
    if not iterable and regions is None and any(METRICS[m].needs_regions for m in metrics):
        raise ValueError("the pointing games need regions (object masks or boxes)")
    bad = sorted(set(metric_options or {}) - set(GROUPS))
    if bad:
        raise ValueError(f"metric_options has no group {bad[0]!r}; groups: {', '.join(GROUPS)}")
    return list(dict.fromkeys(methods)), list(dict.fromkeys(metrics))


__all__ = [
    "METRICS",
    "ConfidenceChange",
    "Curves",
    "FaithfulnessTable",
    "MetricSpec",
    "Randomization",
    "RoadScores",
    "Scorer",
    "average_drop",
    "box_regions",
    "cascade_layers",
    "cascading_randomization",
    "confidence_change",
    "deletion_curves",
    "energy_pointing_game",
    "faithfulness_table",
    "increase_in_confidence",
    "insertion_curves",
    "linear_imputation",
    "list_metrics",
    "noisy_linear_imputation",
    "pixel_ranks",
    "pointing_game",
    "road",
    "spearman",
]
