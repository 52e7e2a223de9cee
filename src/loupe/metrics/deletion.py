"""Deletion and insertion (Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of
Black-box Models", BMVC 2018).

Pixels are ranked by the map, most relevant first. Deletion replaces the first ``n`` ranked
pixels (all channels) by a baseline and follows the target's score as ``n`` grows from 0 to
all pixels; insertion starts from the baseline and puts the first ``n`` pixels of the image
back. The metric is the area under the score curve against the fraction of pixels changed,
``AUC = integral_0^1 score(f) df`` (trapezoid rule): low is good for deletion (the score
falls fast), high is good for insertion.

Steps follow torch-cam's ``DeletionInsertionMetric``: ``steps`` intervals of
``ceil(H*W / steps)`` pixels (the last one shorter), the curve integrated against the actual
fractions. Petsiuk et al. delete with a constant (zero) baseline and insert from a blurred
copy of the image; those are the defaults here. The blur is a normalised Gaussian
(``blur_sigma=5`` pixels, reflect border); Petsiuk's code convolves with an 11x11 window of
a sigma-5 Gaussian that is not renormalised and zero-pads, which also darkens the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loupe.methods.shuffle import gaussian_blur
from loupe.metrics._scoring import Scorer, check_positive_int, maps_for, pixel_ranks
from loupe.targets import Targets, TargetsLike

Baseline = float | str | torch.Tensor


@dataclass(frozen=True)
class Curves:
    """fractions: ``(S,)`` fraction of pixels changed at each point; scores: ``(B, K, S)``
    target scores along the curve (NaN on padding targets); auc: ``(B, K)`` the area under
    each curve."""

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


def curve_counts(pixels: int, steps: int) -> list[int]:
    """Pixels changed at each point: ``0, s, 2s, ..., pixels`` with ``s = ceil(pixels/steps)``."""
    check_positive_int(steps, "steps")
    size = -(-pixels // steps)
    return [*range(0, pixels, size), pixels]


def baseline_images(images: torch.Tensor, baseline: Baseline, blur_sigma: float = 5.0
                    ) -> torch.Tensor:
    """The baseline ``(B, C, H, W)`` for ``images``: a constant (float), ``"blur"`` (a Gaussian
    blur of each image, ``blur_sigma`` pixels) or a tensor broadcastable to the images."""
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be a number, 'blur' or a tensor, got {baseline!r}")
        if not isinstance(blur_sigma, (int, float)) or not blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0 pixels, got {blur_sigma!r}")
        return gaussian_blur(images, float(blur_sigma))
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(images), images.shape)
        except RuntimeError:
            raise ValueError(
                f"a baseline tensor must broadcast to the images {tuple(images.shape)}, got "
                f"{tuple(baseline.shape)}"
            ) from None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(images, float(baseline))
    raise ValueError(f"baseline must be a number, 'blur' or a tensor, got {baseline!r}")


def deletion_curves(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: TargetsLike | Targets = None,
    *,
    steps: int = 20,
    baseline: Baseline = 0.0,
    blur_sigma: float = 5.0,
    score: str = "probability",
    seed: int = 0,
    chunk_size: int | None = None,
    scorer: Scorer | None = None,
) -> Curves:
    """Deletion curves and AUCs of ``maps`` ``(B, K, h, w)`` (or ``(B, h, w)``) for
    ``images`` ``(B, C, H, W)``; Petsiuk et al. 2018, ``AUC = int_0^1 p_c(x with the top-f
    pixels replaced by the baseline) df``, lower is better.

    Args:
        targets: one per map (see :mod:`loupe.targets`); None = each image's top-1 class.
        steps: intervals of the curve; one forward per interval and map.
        baseline: 0.0 (default, Petsiuk's deletion), any constant, ``"blur"`` or a tensor.
        score: ``"probability"`` (softmax) or ``"logit"``.
        seed: breaks ties between equal map values (see :func:`pixel_ranks`).
        chunk_size: perturbed images per forward (None: from the image size, see
            :class:`~loupe.metrics._scoring.Scorer`); results do not depend on it.
        scorer: a :class:`Scorer` to share clean scores between metrics (then ``targets``,
            ``score`` and ``chunk_size`` are the scorer's).

    Returns:
        :class:`Curves` with ``steps + 1`` points (fewer when ``steps`` exceeds ``H*W``).
    """
    return _curves(
        model, images, maps, targets, insert=False, steps=steps, baseline=baseline,
        blur_sigma=blur_sigma, score=score, seed=seed, chunk_size=chunk_size, scorer=scorer,
    )


def insertion_curves(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: TargetsLike | Targets = None,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    blur_sigma: float = 5.0,
    score: str = "probability",
    seed: int = 0,
    chunk_size: int | None = None,
    scorer: Scorer | None = None,
) -> Curves:
    """Insertion curves and AUCs; Petsiuk et al. 2018, ``AUC = int_0^1 p_c(baseline with the
    top-f pixels of x put back) df``, higher is better. The baseline defaults to the blurred
    image (Petsiuk's insertion); other arguments as :func:`deletion_curves`."""
    return _curves(
        model, images, maps, targets, insert=True, steps=steps, baseline=baseline,
        blur_sigma=blur_sigma, score=score, seed=seed, chunk_size=chunk_size, scorer=scorer,
    )


def _curves(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: TargetsLike | Targets,
    *,
    insert: bool,
    steps: int,
    baseline: Baseline,
    blur_sigma: float,
    score: str,
    seed: int,
    chunk_size: int | None,
    scorer: Scorer | None,
) -> Curves:
    scorer = scorer or Scorer(model, images, targets, score=score, chunk_size=chunk_size)
    images = scorer.images
    maps = maps_for(maps, images, scorer.count)
    pixels = images.shape[-2] * images.shape[-1]
    counts = curve_counts(pixels, steps)
    ranks = pixel_ranks(maps, seed)  # (B, K, P)
    base = baseline_images(images, baseline, blur_sigma).flatten(2)
    flat = images.flatten(2)
    # deletion computes the points after 0 (point 0 is the clean image), insertion the points
    # before the last (the last is the clean image)
    computed = torch.tensor(counts[:-1] if insert else counts[1:], device=images.device)

    def build(image_of: torch.Tensor, target_of: torch.Tensor, step_of: torch.Tensor
              ) -> torch.Tensor:
        first = ranks[image_of, target_of] < computed[step_of][:, None]  # (R, P)
        keep_image = first if insert else ~first
        rows = torch.where(keep_image[:, None], flat[image_of], base[image_of])
        return rows.view(-1, *images.shape[1:])

    changed = scorer.perturbed(len(computed), build)
    clean = scorer.clean()[..., None]
    scores = torch.cat([changed, clean] if insert else [clean, changed], dim=-1)
    fractions = torch.tensor(counts, dtype=torch.float32, device=images.device) / pixels
    return Curves(fractions, scores, torch.trapezoid(scores, fractions, dim=-1))
