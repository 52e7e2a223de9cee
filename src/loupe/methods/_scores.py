"""What the gradient methods differentiate, and how their maps are smoothed: two small
transforms shared by saliency, SmoothGrad and shuffle saliency.

Scores (``score=``)
    A transform of the model's logits ``z`` ``(B, N)`` applied before the target is picked
    (:meth:`loupe.targets.Targets.scores`), so the gradient is that of:

    ``"logit"``
        ``z_k``, the raw logit (Simonyan et al. 2014; every method's default).
    ``"log-softmax"``
        ``log p_k = z_k - log sum_j exp z_j``: raising class k's score also means lowering
        the others', so evidence shared by several classes cancels (class-discriminative; the
        gradient is ``dz_k - sum_j p_j dz_j``).
    ``"logit-minus-mean"``
        ``z_k - mean_{j != k} z_j``: the same idea without the softmax weighting, so a
        confident class elsewhere in the image does not dominate the subtracted term.

    Both class-discriminative scores keep the arg-max (top-1 targets are the same) and need
    class targets: score functions (``targets=callable``) always see the raw output.

Smoothing (``smooth=``)
    A Gaussian blur of the maps whose sigma is a fraction of the shorter side of the model
    input (``sigma = smooth * min(H, W)``), so one value means the same on a 64-pixel
    synthetic image and a 448-pixel photo; 0 is off.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCORES = ("logit", "log-softmax", "logit-minus-mean")


def check_score(score: object) -> str:
    """``score`` itself, or a ValueError listing :data:`SCORES`."""
    if not isinstance(score, str) or score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
    return score


def class_scores(output: torch.Tensor, score: str) -> torch.Tensor:
    """The logits ``output`` ``(B, N)`` turned into the scores whose target entries are
    differentiated, ``(B, N)`` (see the module docstring)."""
    if score == "logit":
        return output
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"score={score!r} needs class logits (B, N) from the model, got {shape}")
    if score == "log-softmax":
        return torch.log_softmax(output, dim=1)
    n = output.shape[1]
    if n < 2:
        raise ValueError("score='logit-minus-mean' needs a model with at least 2 outputs")
    others = (output.sum(1, keepdim=True) - output) / (n - 1)
    return output - others


def check_smooth(smooth: object) -> float:
    """``smooth`` as a float in ``[0, 0.5]``, or a ValueError saying it is a fraction."""
    if (
        isinstance(smooth, bool)
        or not isinstance(smooth, (int, float))
        or not 0 <= smooth <= 0.5
    ):
        raise ValueError(
            "smooth must be a Gaussian sigma as a fraction of the shorter image side, "
            f"in [0, 0.5] (e.g. 0.04); got {smooth!r}"
        )
    return float(smooth)


def smooth_maps(maps: torch.Tensor, smooth: float) -> torch.Tensor:
    """``(..., H, W)`` maps blurred with sigma ``smooth * min(H, W)`` pixels (0: unchanged)."""
    if smooth <= 0:
        return maps
    return gaussian_blur(maps, smooth * min(maps.shape[-2:]))


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(..., H, W)`` maps blurred by a normalised Gaussian of ``sigma`` pixels (kernel
    radius ``ceil(3 sigma)``, reflect border as torchvision, replicate where the image is
    smaller than the radius), separably, on the maps' device."""
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    shape = maps.shape
    planes = maps.reshape(-1, 1, *shape[-2:])
    mode = "reflect" if radius < min(shape[-2:]) else "replicate"
    planes = F.pad(planes, (radius, radius, radius, radius), mode=mode)
    planes = F.conv2d(planes, kernel.view(1, 1, 1, -1))
    planes = F.conv2d(planes, kernel.view(1, 1, -1, 1))
    return planes.reshape(shape)
