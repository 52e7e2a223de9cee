"""Evaluation of the study: per-image sweep statistics, summaries and paired bootstraps.

Per image and threshold only three vectors of a confusion matrix matter for IoU: the true
positives (diagonal), the ground-truth count (row sums) and the predicted count (column sums)
of every class, ``IoU_c = TP_c / (GT_c + P_c - TP_c)``. Keeping those, ``(I, T, 3, N)``,
instead of ``(I, T, N, N)`` matrices makes a bootstrap over images with the threshold
re-chosen in every resample cheap: one matrix product per method gives the resampled mIoU
curves ``(n, T)`` of all thresholds at once. The numbers are those of
:func:`loupe.metrics.mean_iou` on the summed matrices (checked in tests/test_study_smoke.py,
and at run time against :func:`loupe.metrics.sweep_summary`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loupe.io import load_npz, save_npz
from loupe.mapsets.files import load_map_file
from loupe.methods.shuffle import gaussian_blur
from loupe.metrics import sweep_confusions, sweep_summary
from loupe.metrics.sweep import SweepSummary

SMOOTH_FRACTION = 0.04  # Gaussian sigma as a fraction of the image's shorter side


def smoothing_sigma(height: int, width: int) -> float:
    """The post-hoc blur's sigma in pixels for an ``H x W`` image."""
    return SMOOTH_FRACTION * min(height, width)


def confusion_stats(confusions: torch.Tensor) -> torch.Tensor:
    """``(..., N, N)`` confusion matrices -> ``(..., 3, N)`` int64: TP, GT count, predicted
    count of every class."""
    tp = confusions.diagonal(dim1=-2, dim2=-1)
    return torch.stack([tp, confusions.sum(-1), confusions.sum(-2)], dim=-2).long()


def miou_from_stats(stats: torch.Tensor) -> torch.Tensor:
    """``(..., 3, N)`` summed statistics -> ``(...)`` float64 mIoU over the classes with a
    non-zero union (the VOC protocol, as :func:`loupe.metrics.mean_iou`)."""
    tp, gt, pred = stats.double().unbind(-2)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    return iou.nanmean(-1)


def image_stats(
    maps: torch.Tensor, classes: torch.Tensor, gt: torch.Tensor, thresholds: torch.Tensor,
    num_classes: int, sigma: float = 0.0,
) -> torch.Tensor:
    """``(T, 3, N)`` statistics of one image's ``(K, H, W)`` maps at every threshold, after a
    Gaussian blur of ``sigma`` pixels when ``sigma > 0`` (the blur of shuffle's ``smooth``)."""
    if sigma > 0 and maps.shape[0]:
        maps = gaussian_blur(maps, sigma)
    return confusion_stats(sweep_confusions(maps, classes, gt, thresholds, num_classes))


@dataclass
class VariantStats:
    """Statistics of one variant (raw or smoothed) on the images it covers.

    ids: the images, in data-set order. stats: ``(I, T, 3, N)`` int64.
    summed: ``(T, N, N)`` int64 confusion matrices summed over the images.
    """

    ids: list[str]
    stats: torch.Tensor
    summed: torch.Tensor

    def subset(self, ids: Sequence[str]) -> torch.Tensor:
        """``(len(ids), T, 3, N)``: the rows of ``ids`` (each must be covered)."""
        where = {i: k for k, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise ValueError(f"images {missing[:3]} are not covered by this variant")
        return self.stats[torch.tensor([where[i] for i in ids], dtype=torch.long)]


def evaluate_folder(
    folder: Path, ids: Sequence[str], masks: Sequence[torch.Tensor], thresholds: torch.Tensor,
    num_classes: int, smooth: bool,
) -> VariantStats:
    """Statistics of the map files ``folder/<id>.npz`` against ground-truth ``masks``."""
    rows, summed = [], None
    for sample_id, gt in zip(ids, masks, strict=True):
        maps, classes = load_map_file(folder / f"{sample_id}.npz")
        maps_t = torch.from_numpy(maps)
        sigma = smoothing_sigma(*gt.shape) if smooth else 0.0
        if sigma > 0 and maps_t.shape[0]:
            maps_t = gaussian_blur(maps_t, sigma)
        conf = sweep_confusions(maps_t, torch.from_numpy(classes), gt, thresholds, num_classes)
        summed = conf if summed is None else summed + conf
        rows.append(confusion_stats(conf))
    return VariantStats(list(ids), torch.stack(rows), summed)


def save_stats(path: Path, value: VariantStats) -> None:
    save_npz(path, ids=np.array(value.ids), stats=value.stats.numpy(),
             summed=value.summed.numpy())


def load_stats(path: Path) -> VariantStats:
    data = load_npz(path)
    return VariantStats([str(i) for i in data["ids"]], torch.from_numpy(data["stats"]),
                        torch.from_numpy(data["summed"]))


def summarize(value: VariantStats, thresholds: torch.Tensor) -> SweepSummary:
    """loupe's sweep summary of the summed matrices, checked against the statistics path."""
    summary = sweep_summary(value.summed, thresholds)
    curve = miou_from_stats(value.stats.sum(0))
    if not torch.allclose(curve, torch.tensor(summary.miou, dtype=torch.float64), atol=1e-9):
        raise AssertionError("statistics and confusion matrices disagree")
    return summary


def resample_weights(images: int, n: int, seed: int) -> torch.Tensor:
    """``(n, I)`` float64 counts of each image in each resample: the same draws as
    :mod:`loupe.metrics.bootstrap` (seeded CPU generator, ``randint`` of shape (n, I))."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    draws = torch.randint(images, (n, images), generator=generator)
    weights = torch.zeros(n, images, dtype=torch.float64)
    weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return weights


def resampled_curves(stats: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(n, T)`` mIoU curves of every resample from ``(I, T, 3, N)`` statistics."""
    flat = stats.reshape(stats.shape[0], -1).double()
    return miou_from_stats((weights @ flat).view(weights.shape[0], *stats.shape[1:]))


@dataclass(frozen=True)
class Difference:
    """mIoU(a) - mIoU(b) in points with a percentile interval; ``at``: ``"best"`` (each at its
    own best threshold, re-chosen in every resample) or a threshold."""

    a: str
    b: str
    at: str
    observed: float
    low: float
    high: float
    images: int

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "a wins"
        if self.high < 0:
            return "b wins"
        return "includes 0"


def interval_cell(d: Sequence[float] | None) -> str:
    """``[observed, low, high]`` (points) as a table cell, marked **>0** / **<0** where the
    interval excludes 0; empty for None."""
    if not d:
        return ""
    mark = " **>0**" if d[1] > 0 else " **<0**" if d[2] < 0 else ""
    return f"{d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}]{mark}"


def _interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    q = torch.tensor([alpha, 1 - alpha], dtype=values.dtype)
    low, high = torch.quantile(values, q).tolist()
    return low, high


def paired_differences(
    a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], thresholds: Sequence[float],
    common: float, *, n: int = 1000, seed: int = 0, level: float = 0.95,
) -> list[Difference]:
    """Paired bootstrap of ``a - b`` (both ``(I, T, 3, N)`` on the same images): at each
    method's own best threshold (re-chosen per resample) and at the ``common`` threshold."""
    if a.shape != b.shape:
        raise ValueError(f"statistics of {names} cover different images or classes: "
                         f"{tuple(a.shape)} vs {tuple(b.shape)}")
    j = min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - common))
    if abs(thresholds[j] - common) > 1e-6:
        raise ValueError(f"common threshold {common} is not among the swept thresholds")
    weights = resample_weights(a.shape[0], n, seed)
    ra, rb = resampled_curves(a, weights), resampled_curves(b, weights)
    full_a, full_b = miou_from_stats(a.sum(0)), miou_from_stats(b.sum(0))
    out = []
    for at, da, observed in (
        ("best", ra.amax(1) - rb.amax(1), float(full_a.max() - full_b.max())),
        (f"{common:g}", ra[:, j] - rb[:, j], float(full_a[j] - full_b[j])),
    ):
        low, high = _interval(da, level)
        out.append(Difference(names[0], names[1], at, 100 * observed, 100 * low, 100 * high,
                              a.shape[0]))
    return out


def percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"
