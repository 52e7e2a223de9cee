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
Jacobi-preconditioned conjugate gradients on the pixel grid (the matrix is the graph
Laplacian of the removed pixels, symmetric positive definite while some pixel is kept),
where the authors and pytorch-grad-cam call ``scipy.sparse.linalg.spsolve`` on one image at
a time. Pixels are removed by rank, ``floor(f * H * W)`` of them, as in the authors' code
(ties broken by a seeded random order); pytorch-grad-cam thresholds at
``np.percentile(map, 100 f)``, which removes the same pixels when ``f * H * W`` is a whole
number and the map has no ties.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from loupe._autograd import GRADIENT_CHUNK
from loupe.metrics._scoring import Scorer, maps_for, pixel_ranks
from loupe.targets import Targets, TargetsLike

logger = logging.getLogger(__name__)

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ORDERS = ("morf", "lerf")



def neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """``sum_j w_j x_j`` over the 8 neighbours of every pixel of ``x`` ``(..., H, W)`` (zero
    outside the image), with Rong et al.'s weights 1/6 (direct) and 1/12 (diagonal): the
    stencil ``([1 2 1]^T [1 2 1] - 4 delta) / 12``, applied separably (on CPUs 8x faster
    than a one-channel ``conv2d``)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :, 0:w] + 2 * padded[..., :, 1:w + 1] + padded[..., :, 2:w + 2]
    block = rows[..., 0:h, :] + 2 * rows[..., 1:h + 1, :] + rows[..., 2:h + 2, :]
    return (block - 4 * x) / 12


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


def linear_imputation(
    images: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 5000
) -> torch.Tensor:
    """``images`` ``(N, C, H, W)`` with the pixels where ``removed`` ``(N, H, W)`` is True
    replaced by the solution of ``x_i = sum_j w_ij y_j / sum_j w_ij`` over the 8 neighbours
    ``j`` in the image (``y`` = the image where kept, ``x`` where removed), per channel.

    Conjugate gradients, all rows and channels batched, until every system's residual is
    below ``tol`` times its right-hand side (checked every 10 iterations); float32 (or the
    images' float64), about 1e-5 from scipy's direct solve at 224x224. Rows that remove
    every pixel have no solution: a ValueError.
    """
    n, c, h, w = images.shape
    if removed.shape != (n, h, w):
        raise ValueError(f"removed must be (N, H, W) = {(n, h, w)}, got {tuple(removed.shape)}")
    if bool(removed.flatten(1).all(1).any()):
        raise ValueError("cannot impute an image whose pixels are all removed")
    dtype = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    values = images.to(dtype).reshape(n * c, 1, h, w)
    unknown = removed.to(dtype)[:, None].repeat_interleave(c, dim=0)
    degree = neighbour_sum(torch.ones(1, 1, h, w, dtype=dtype, device=images.device))

    unknown_degree = unknown * degree

    def apply(x: torch.Tensor) -> torch.Tensor:
        return unknown_degree * x - unknown * neighbour_sum(x)

    rhs = unknown * neighbour_sum(values * (1 - unknown))
    solution = _conjugate_gradients(apply, rhs, tol, max_iter)
    filled = torch.where(unknown.bool(), solution, values)
    return filled.reshape(n, c, h, w).to(images.dtype)


def _conjugate_gradients(apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                         tol: float, max_iter: int) -> torch.Tensor:
    """Solve ``apply(x) = rhs`` for a batch ``(N, 1, H, W)`` of SPD systems by conjugate
    gradients, one step size per system. (The diagonal is 1 inside the image and 7/12 or 5/12
    at its border: a Jacobi preconditioner does not pay.)"""
    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vecdot(a.flatten(1), b.flatten(1))[:, None, None, None]

    tiny = torch.finfo(rhs.dtype).tiny
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = rhs.clone()
    rr = dot(residual, residual)
    limit = (tol * tol) * rr
    for step in range(max_iter):
        if step % 10 == 0 and bool((rr <= limit).all()):
            logger.debug("conjugate gradients: %d iterations", step)
            return x
        moved = apply(direction)
        alpha = rr / dot(direction, moved).clamp(min=tiny)
        x.addcmul_(alpha, direction)
        residual.addcmul_(alpha, moved, value=-1)
        rr_next = dot(residual, residual)
        direction.mul_(rr_next / rr.clamp(min=tiny)).add_(residual)
        rr = rr_next
    logger.warning("conjugate gradients stopped after max_iter=%d iterations", max_iter)
    return x


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
    chunk_size: int = GRADIENT_CHUNK,
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
        chunk_size: imputed images per solve and forward; results do not depend on it.
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
