"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML 2022).

Removed pixels are not set to a constant (whose shape leaks the map to the model) but
imputed from their neighbours: each removed pixel equals the weighted mean of its 8
neighbours (weights 1/6 for the 4 direct, 1/12 for the 4 diagonal ones, renormalised at the
border), a sparse linear system over all removed pixels, plus Gaussian noise (std 0.01) on
them. MoRF removes the most relevant fraction ``f`` of the pixels, LeRF the least relevant;
the scores are averaged over ``f`` in 10%..90%. MoRF low and LeRF high are good, and the
combined score is ``(mean LeRF - mean MoRF) / 2`` (pytorch-grad-cam's ``ROADCombined``).

The system is solved for all rows (image, target, order, fraction) and channels at once by
multigrid-preconditioned conjugate gradients on the pixel grid (:mod:`loupe.metrics._harmonic`),
where the authors and pytorch-grad-cam call ``scipy.sparse.linalg.spsolve`` on one image at a
time. Pixels are removed by rank, ``floor(f * H * W)`` of them, as in the authors' code (ties
broken by a seeded random order); pytorch-grad-cam thresholds at ``np.percentile(map, 100 f)``,
which removes the same pixels when ``f * H * W`` is a whole number and the map has no ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from loupe.metrics._harmonic import linear_imputation
from loupe.metrics._scoring import Scorer, maps_for, pixel_ranks
from loupe.targets import Targets, TargetsLike

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class RoadScores:
    """fractions: ``(F,)`` fractions of pixels removed; morf, lerf: ``(B, K, F)`` target
    scores after removing the most / least relevant fraction (NaN on padding targets)."""

    fractions: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor

    @property
    def combined(self) -> torch.Tensor:
        """``(B, K)`` ``(mean_f LeRF - mean_f MoRF) / 2``; higher is better."""
        return (self.lerf.mean(-1) - self.morf.mean(-1)) / 2


def noisy_linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float = 1e-6,
) -> torch.Tensor:
    """ROAD's imputation: :func:`linear_imputation` plus ``noise * N(0, 1)`` on the removed
    pixels; the noise is drawn on the CPU from ``generator`` (same draws on any device)."""
    filled = linear_imputation(images, removed, tol=tol)
    draws = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    return filled + noise * draws * removed[:, None].to(images.dtype)


def road(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: TargetsLike | Targets = None,
    *,
    fractions: Sequence[float] = FRACTIONS,
    noise: float = 0.01,
    score: str = "probability",
    seed: int = 0,
    tol: float = 1e-6,
    chunk_size: int | None = None,
    scorer: Scorer | None = None,
) -> RoadScores:
    """ROAD MoRF and LeRF scores of ``maps`` ``(B, K, h, w)`` (or ``(B, h, w)``) for
    ``images`` ``(B, C, H, W)``; Rong et al. 2022, ``p_c(impute(x, top/bottom f of M))``.

    Args:
        targets: one per map; None = each image's top-1 class.
        fractions: fractions of the pixels removed, each in [0, 1); one forward per fraction,
            order and map.
        noise: std of the Gaussian noise added to imputed pixels (0.01 as the authors).
        score: ``"probability"`` (softmax) or ``"logit"``.
        seed: seeds the noise (one draw per order and fraction, shared by all images, so
            results do not depend on the batch) and the tie-breaking of equal map values.
        tol: relative residual at which the imputation solver stops.
        chunk_size: imputed images per solve and forward (None: from the image size, see
            :class:`~loupe.metrics._scoring.Scorer`); results do not depend on it.
        scorer: share targets and settings with other metrics.
    """
    fractions = _check(fractions, noise, tol)
    scorer = scorer or Scorer(model, images, targets, score=score, chunk_size=chunk_size)
    images = scorer.images
    ranks = pixel_ranks(maps_for(maps, images, scorer.count), seed)  # (B, K, P)
    pixels = ranks.shape[-1]
    counts = torch.tensor([math.floor(f * pixels + 1e-6) for f in fractions] * 2,
                          device=images.device)
    lerf = torch.arange(len(counts), device=images.device) >= len(fractions)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn((len(counts), *images.shape[1:]), generator=generator)
    draws = (noise * draws).to(images.device, images.dtype)

    def build(image_of: torch.Tensor, target_of: torch.Tensor, step_of: torch.Tensor
              ) -> torch.Tensor:
        rank = ranks[image_of, target_of]
        count = counts[step_of][:, None]
        removed = torch.where(lerf[step_of][:, None], rank >= pixels - count, rank < count)
        removed = removed.view(-1, *images.shape[-2:])
        filled = linear_imputation(images[image_of], removed, tol=tol)
        return filled + draws[step_of] * removed[:, None].to(images.dtype)

    scores = scorer.perturbed(len(counts), build)
    values = torch.tensor(fractions, dtype=torch.float32, device=images.device)
    return RoadScores(values, scores[..., : len(fractions)], scores[..., len(fractions):])


def _check(fractions: Sequence[float], noise: float, tol: float) -> tuple[float, ...]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be numbers in [0, 1), got {fractions!r}") from None
    if not values or not all(0 <= f < 1 for f in values):
        raise ValueError(f"fractions must be a non-empty list of numbers in [0, 1), got {values}")
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not noise >= 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")
    if not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}")
    return values
