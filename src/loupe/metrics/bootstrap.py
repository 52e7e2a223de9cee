"""Bootstrap intervals for mIoU and for the mIoU difference of two methods.

Images are the unit of resampling (Efron & Tibshirani, "An Introduction to the Bootstrap",
1993; percentile intervals): each resample draws I images with replacement, sums their
confusion matrices and recomputes mIoU. For a difference the *same* resample is used for
both methods (a paired bootstrap), so image difficulty cancels out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loupe.metrics.segmentation import mean_iou


@dataclass(frozen=True)
class BootstrapInterval:
    """observed: the statistic on all images; low, high: the percentile interval at
    ``level``; n: the number of resamples."""

    observed: float
    low: float
    high: float
    level: float
    n: int


def _resample_weights(images: int, n: int, seed: int, device: torch.device) -> torch.Tensor:
    """``(n, I)`` float64: how often each image appears in each resample (rows sum to I)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    draws = torch.randint(images, (n, images), generator=generator)
    weights = torch.zeros(n, images, dtype=torch.float64)
    weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return weights.to(device)


def _check(conf: torch.Tensor, name: str) -> None:
    if conf.dim() != 3 or conf.shape[-1] != conf.shape[-2] or conf.shape[0] == 0:
        raise ValueError(
            f"{name} must be per-image confusion matrices (I, N, N) with I >= 1, got "
            f"{tuple(conf.shape)}"
        )


def _resampled_miou(conf: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(n,)`` mIoU of each resample's summed confusion matrix."""
    n_classes = conf.shape[-1]
    summed = weights @ conf.reshape(conf.shape[0], -1).double()  # exact: integer counts
    return mean_iou(summed.view(-1, n_classes, n_classes))


def _interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    alpha = (1 - level) / 2
    q = torch.tensor([alpha, 1 - alpha], dtype=values.dtype, device=values.device)
    low, high = torch.quantile(values, q).tolist()
    return low, high


def bootstrap_miou_ci(
    conf: torch.Tensor, n: int = 1000, seed: int = 0, level: float = 0.95
) -> BootstrapInterval:
    """Percentile bootstrap interval of the mIoU of ``conf`` ``(I, N, N)``, per-image
    confusion matrices (e.g. ``sweep_confusions(..., per_image=True)[:, t]``)."""
    _check(conf, "conf")
    weights = _resample_weights(conf.shape[0], n, seed, conf.device)
    values = _resampled_miou(conf, weights)
    low, high = _interval(values, level)
    return BootstrapInterval(float(mean_iou(conf.sum(0))), low, high, level, n)


def bootstrap_miou_difference(
    conf_a: torch.Tensor,
    conf_b: torch.Tensor,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapInterval:
    """Paired percentile bootstrap of ``mIoU(a) - mIoU(b)``.

    Args:
        conf_a, conf_b: per-image confusion matrices ``(I, N, N)`` of two methods on the
            same I images, in the same order.
        n: resamples; seed: seeds the resampling (same seed, same interval).

    Returns:
        The observed difference and its interval; an interval above 0 means A beats B
        beyond resampling noise at this level.
    """
    _check(conf_a, "conf_a")
    _check(conf_b, "conf_b")
    if conf_a.shape != conf_b.shape:
        raise ValueError(
            f"conf_a {tuple(conf_a.shape)} and conf_b {tuple(conf_b.shape)} must cover the "
            "same images and classes"
        )
    conf_b = conf_b.to(conf_a.device)
    weights = _resample_weights(conf_a.shape[0], n, seed, conf_a.device)
    values = _resampled_miou(conf_a, weights) - _resampled_miou(conf_b, weights)
    low, high = _interval(values, level)
    observed = float(mean_iou(conf_a.sum(0)) - mean_iou(conf_b.sum(0)))
    return BootstrapInterval(observed, low, high, level, n)


def bootstrap_mean_ci(
    values: torch.Tensor, n: int = 1000, seed: int = 0, level: float = 0.95
) -> BootstrapInterval:
    """Percentile bootstrap interval of the mean of per-image ``values`` ``(I,)`` (finite).
    The resamples depend only on ``I`` and ``seed``, so two methods scored on the same images
    with the same seed are resampled in pairs."""
    if not isinstance(values, torch.Tensor) or values.dim() != 1 or values.numel() == 0:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"values must be per-image values (I,) with I >= 1, got {shape}")
    if not torch.isfinite(values).all():
        raise ValueError("values must be finite; drop the images without a value first")
    values = values.double()
    weights = _resample_weights(values.shape[0], n, seed, values.device)
    low, high = _interval(weights @ values / values.shape[0], level)
    return BootstrapInterval(float(values.mean()), low, high, level, n)
