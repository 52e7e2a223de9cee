"""Paired bootstrap of whole mIoU-threshold curves: each method at its own best threshold,
re-chosen in every resample, and any fixed threshold, from one set of resamples.

Per image and threshold, IoU needs only three vectors of a confusion matrix: the true
positives (its diagonal), the ground-truth count (row sums) and the predicted count (column
sums) of every class, ``IoU_c = TP_c / (GT_c + P_c - TP_c)``. Keeping those ``(I, T, 3, N)``
*statistics* instead of ``(I, T, N, N)`` matrices, one matrix product per method gives the mIoU
curves ``(n, T)`` of all ``n`` resamples at once. The resamples are those of
:mod:`loupe.metrics.bootstrap` (same seed, same draws), and the mIoU is that of
:func:`loupe.metrics.mean_iou` on the summed matrices (the mean over classes with a non-zero
union), so at a fixed threshold the interval is exactly that of
:func:`~loupe.metrics.bootstrap_miou_difference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loupe.metrics.bootstrap import BootstrapInterval, _interval, _resample_weights


def confusion_stats(confusions: torch.Tensor) -> torch.Tensor:
    """``(..., N, N)`` confusion matrices (rows: ground truth) -> ``(..., 3, N)`` int64: true
    positives, ground-truth count and predicted count of every class."""
    if confusions.dim() < 2 or confusions.shape[-1] != confusions.shape[-2]:
        raise ValueError(f"confusions must be (..., N, N), got {tuple(confusions.shape)}")
    tp = confusions.diagonal(dim1=-2, dim2=-1)
    return torch.stack([tp, confusions.sum(-1), confusions.sum(-2)], dim=-2).long()


def miou_from_stats(stats: torch.Tensor) -> torch.Tensor:
    """``(..., 3, N)`` statistics (summed over images) -> ``(...)`` float64 mIoU over the
    classes with a non-zero union (NaN when there is none)."""
    tp, gt, predicted = stats.double().unbind(-2)
    union = gt + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    return iou.nanmean(-1)


@dataclass(frozen=True)
class ResampledCurves:
    """The mIoU curve of one method on all images and on each bootstrap resample.

    observed: ``(T,)`` float64, the curve on all images; resampled: ``(n, T)`` float64;
    images, seed: the resampling (curves with equal ``images``, ``n`` and ``seed`` share
    their resamples, so their differences are paired); level: of the intervals.
    """

    observed: torch.Tensor
    resampled: torch.Tensor
    images: int
    seed: int
    level: float

    def best(self) -> BootstrapInterval:
        """The best mIoU over the thresholds, the maximum re-taken in every resample."""
        low, high = _interval(self.resampled.amax(1), self.level)
        return BootstrapInterval(float(self.observed.max()), low, high, self.level,
                                 self.resampled.shape[0])

    def difference(self, other: ResampledCurves, at: int | None = None) -> BootstrapInterval:
        """``self - other``: best against best (each curve's maximum in each resample) when
        ``at`` is None, else at threshold index ``at``."""
        if (self.images, self.seed, self.resampled.shape) != (
                other.images, other.seed, other.resampled.shape):
            raise ValueError("curves resampled differently (images, seed, resamples or "
                             "thresholds differ) cannot be compared pairwise")
        if at is None:
            values = self.resampled.amax(1) - other.resampled.amax(1)
            observed = float(self.observed.max() - other.observed.max())
        else:
            values = self.resampled[:, at] - other.resampled[:, at]
            observed = float(self.observed[at] - other.observed[at])
        low, high = _interval(values, self.level)
        return BootstrapInterval(observed, low, high, self.level, self.resampled.shape[0])


def resample_curves(stats: torch.Tensor, n: int = 1000, seed: int = 0, level: float = 0.95
                    ) -> ResampledCurves:
    """The :class:`ResampledCurves` of per-image statistics ``(I, T, 3, N)``
    (:func:`confusion_stats` of each image's sweep): ``n`` resamples of the ``I`` images with
    replacement, drawn from ``seed``."""
    if stats.dim() != 4 or stats.shape[2] != 3 or stats.shape[0] == 0:
        raise ValueError(f"stats must be per-image statistics (I, T, 3, N) with I >= 1, got "
                         f"{tuple(stats.shape)}")
    if n < 1:
        raise ValueError(f"the bootstrap needs at least one resample, got {n}")
    images = stats.shape[0]
    weights = _resample_weights(images, n, seed, stats.device)
    flat = stats.reshape(images, -1).double()  # exact: integer counts below 2**53
    resampled = miou_from_stats((weights @ flat).view(n, *stats.shape[1:]))
    return ResampledCurves(miou_from_stats(stats.sum(0)), resampled, images, seed, level)
