"""Paired bootstrap of mIoU-threshold curves against the matrix path and a brute-force loop."""

from __future__ import annotations

import pytest
import torch

from loupe.metrics import (
    bootstrap_miou_ci,
    bootstrap_miou_difference,
    confusion_stats,
    mean_iou,
    miou_from_stats,
    resample_curves,
)
from loupe.metrics.bootstrap import _resample_weights


def _per_image(seed: int, images: int = 9, thresholds: int = 4, classes: int = 4
               ) -> torch.Tensor:
    """``(I, T, N, N)`` random per-image matrices; class 3 never occurs in image 0 and some
    images lack class 2 entirely (classes with an empty union are left out of the mean)."""
    g = torch.Generator().manual_seed(seed)
    conf = torch.randint(0, 20, (images, thresholds, classes, classes), generator=g)
    conf[0, :, 3, :] = 0
    conf[0, :, :, 3] = 0
    conf[1::3, :, 2, :] = 0
    conf[1::3, :, :, 2] = 0
    return conf


def test_statistics_give_the_mean_iou_of_the_matrices():
    conf = _per_image(0)
    stats = confusion_stats(conf)
    assert stats.shape == (9, 4, 3, 4) and stats.dtype == torch.long
    assert torch.allclose(miou_from_stats(stats), mean_iou(conf.double()), atol=1e-12)
    assert torch.allclose(miou_from_stats(stats.sum(0)), mean_iou(conf.sum(0).double()),
                          atol=1e-12)


def test_at_a_fixed_threshold_the_interval_is_that_of_the_matrix_bootstrap():
    a, b = _per_image(1), _per_image(2)
    curves_a = resample_curves(confusion_stats(a), 300, seed=7, level=0.9)
    curves_b = resample_curves(confusion_stats(b), 300, seed=7, level=0.9)
    for t in range(4):
        expected = bootstrap_miou_difference(a[:, t], b[:, t], 300, seed=7, level=0.9)
        got = curves_a.difference(curves_b, at=t)
        assert got.observed == pytest.approx(expected.observed, abs=1e-12)
        assert (got.low, got.high) == pytest.approx((expected.low, expected.high), abs=1e-12)
        assert got.n == 300 and got.level == 0.9


def test_best_against_best_rechooses_the_threshold_in_every_resample():
    a, b = _per_image(3), _per_image(4)
    n, seed = 200, 11
    got = resample_curves(confusion_stats(a), n, seed).difference(
        resample_curves(confusion_stats(b), n, seed))
    weights = _resample_weights(a.shape[0], n, seed, torch.device("cpu"))
    values = []
    for w in weights:  # brute force: one resample at a time, on the matrices
        summed_a = (w.view(-1, 1, 1, 1) * a.double()).sum(0)
        summed_b = (w.view(-1, 1, 1, 1) * b.double()).sum(0)
        values.append(float(mean_iou(summed_a).max() - mean_iou(summed_b).max()))
    low, high = torch.quantile(torch.tensor(values, dtype=torch.float64),
                               torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)
    observed = float(mean_iou(a.sum(0).double()).max() - mean_iou(b.sum(0).double()).max())
    assert got.observed == pytest.approx(observed, abs=1e-12)


def test_best_interval_and_a_single_threshold_match_the_ci_of_one_method():
    a = _per_image(5, thresholds=1)
    curves = resample_curves(confusion_stats(a), 150, seed=2)
    expected = bootstrap_miou_ci(a[:, 0], 150, seed=2)
    best = curves.best()
    assert (best.observed, best.low, best.high) == pytest.approx(
        (expected.observed, expected.low, expected.high), abs=1e-12)


def test_errors():
    stats = confusion_stats(_per_image(0))
    with pytest.raises(ValueError, match=r"stats must be per-image statistics \(I, T, 3, N\)"):
        resample_curves(stats[0])
    with pytest.raises(ValueError, match="at least one resample"):
        resample_curves(stats, 0)
    with pytest.raises(ValueError, match="resampled differently"):
        resample_curves(stats, 10, seed=0).difference(resample_curves(stats, 10, seed=1))
    with pytest.raises(ValueError, match=r"confusions must be \(\.\.\., N, N\)"):
        confusion_stats(torch.zeros(3, 4, 5))
