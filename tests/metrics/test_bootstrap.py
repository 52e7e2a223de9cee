"""Bootstrap intervals of mIoU and of mIoU differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loupe.metrics import (
    bootstrap_miou_ci,
    bootstrap_miou_difference,
    confusion_matrix,
    mean_iou,
)


def per_image_confusions(noise: float, seed: int, images: int = 30, n: int = 4) -> torch.Tensor:
    """Confusions of predictions that copy the ground truth except a ``noise`` fraction."""
    generator = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, n, (images, 6, 6), generator=generator)
    wrong = torch.rand(images, 6, 6, generator=generator) < noise
    pred = torch.where(wrong, torch.randint(0, n, (images, 6, 6), generator=generator), gt)
    return confusion_matrix(pred, gt, n)


def numpy_percentile_bootstrap(conf_a, conf_b, n, seed, level=0.95):
    """Plain loop: the same draws (torch's generator), each resample summed and scored."""
    images = conf_a.shape[0]
    draws = torch.randint(images, (n, images), generator=torch.Generator().manual_seed(seed))
    values = []
    for row in draws:
        a = conf_a[row].sum(0).double().numpy()
        b = conf_b[row].sum(0).double().numpy()

        def miou(c):
            tp = np.diag(c)
            union = c.sum(0) + c.sum(1) - tp
            return np.mean(tp[union > 0] / union[union > 0])

        values.append(miou(a) - miou(b))
    alpha = (1 - level) / 2
    return np.quantile(values, [alpha, 1 - alpha])


def test_identical_inputs_give_a_zero_interval():
    conf = per_image_confusions(0.3, 0)
    result = bootstrap_miou_difference(conf, conf.clone(), n=200)
    assert (result.observed, result.low, result.high) == (0.0, 0.0, 0.0)


def test_clearly_better_method_has_interval_above_zero():
    good, bad = per_image_confusions(0.05, 0), per_image_confusions(0.6, 0)
    result = bootstrap_miou_difference(good, bad, n=500)
    assert result.low > 0 and result.low <= result.observed <= result.high
    assert result.observed == pytest.approx(float(mean_iou(good.sum(0)) - mean_iou(bad.sum(0))))
    reverse = bootstrap_miou_difference(bad, good, n=500)
    assert reverse.high < 0


def test_matches_a_plain_loop():
    a, b = per_image_confusions(0.2, 1, images=12), per_image_confusions(0.4, 2, images=12)
    result = bootstrap_miou_difference(a, b, n=300, seed=5)
    low, high = numpy_percentile_bootstrap(a, b, 300, 5)
    assert (result.low, result.high) == (pytest.approx(low, abs=1e-12),
                                         pytest.approx(high, abs=1e-12))


def test_seed_determinism():
    a, b = per_image_confusions(0.2, 1), per_image_confusions(0.3, 2)
    first = bootstrap_miou_difference(a, b, n=200, seed=3)
    assert bootstrap_miou_difference(a, b, n=200, seed=3) == first
    assert bootstrap_miou_difference(a, b, n=200, seed=4) != first


def test_ci_contains_observed_and_narrows_with_more_images():
    small = bootstrap_miou_ci(per_image_confusions(0.3, 0, images=10), n=400)
    large = bootstrap_miou_ci(per_image_confusions(0.3, 0, images=200), n=400)
    assert small.low <= small.observed <= small.high
    assert large.high - large.low < small.high - small.low
    assert small.level == 0.95 and small.n == 400


def test_errors():
    conf = per_image_confusions(0.3, 0)
    with pytest.raises(ValueError, match="same images and classes"):
        bootstrap_miou_difference(conf, conf[:5])
    with pytest.raises(ValueError, match=r"conf must be per-image confusion matrices \(I, N, N\)"):
        bootstrap_miou_ci(conf.sum(0))
    with pytest.raises(ValueError, match="level must lie in"):
        bootstrap_miou_ci(conf, level=95)
