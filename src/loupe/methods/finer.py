"""Finer-CAM: Grad-CAM of the score's margin over the most similar classes.

Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual
Explanation", CVPR 2025. The explained score of class ``k`` is
``S_k = sum_j p_j (y_k - alpha y_j) / (sum_j p_j + 1e-9)`` over the ``M`` classes ``j`` whose
logits are closest to ``y_k``, with ``p`` the softmax probabilities (pytorch-grad-cam's
``FinerWeightedTarget``); Grad-CAM of ``S_k`` shows what separates ``k`` from its look-alikes.
"""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.methods._layer_grads import activations_and_grads
from loupe.methods.augment import aug_smoothable
from loupe.methods.projection import channel_maps
from loupe.registry import register
from loupe.targets import Targets


def similar_classes(logits: torch.Tensor, classes: torch.Tensor, count: int) -> torch.Tensor:
    """``(B, K, count)``: for each target class, the ``count`` other classes whose logits are
    closest to its own, closest first (pytorch-grad-cam's ranks 1..count of
    ``argsort(|y - y_k|)``, rank 0 being the class itself)."""
    main = logits.gather(1, classes.clamp(min=0))
    distance = (logits[:, None, :] - main[..., None]).abs()  # (B, K, N)
    distance.scatter_(2, classes.clamp(min=0)[..., None], float("inf"))
    return distance.argsort(dim=-1, stable=True)[..., :count]


def finer_scores(logits: torch.Tensor, targets: Targets, similar: int,
                 alpha: float) -> torch.Tensor:
    """``(B, K)`` Finer-CAM scores ``sum_j p_j (y_k - alpha y_j) / (sum_j p_j + 1e-9)`` over the
    ``similar`` classes closest to each target ``k`` (zero for padding targets)."""
    classes = targets.classes
    if classes is None:
        raise ValueError("finercam compares target classes with their most similar classes; "
                         "score-function targets are not supported")
    if logits.dim() != 2 or similar >= logits.shape[1]:
        raise ValueError(f"finercam needs more than similar={similar} classes; the model "
                         f"output has shape {tuple(logits.shape)}")
    compared = similar_classes(logits.detach(), classes.to(logits.device), similar)
    flat = compared.flatten(1)
    main = logits.gather(1, classes.clamp(min=0))[..., None]
    others = logits.gather(1, flat).view_as(compared)
    probabilities = logits.softmax(1).gather(1, flat).view_as(compared)
    margin = (probabilities * (main - alpha * others)).sum(-1)
    scores = margin / (probabilities.sum(-1) + 1e-9)
    return scores * (classes >= 0).to(scores.dtype)


@register("finercam", uses_layer=True,
          paper="Zhang et al., Finer-CAM: Spotting the Difference Reveals Finer Details for "
          "Visual Explanation, CVPR 2025")
@aug_smoothable
def finercam(ctx: MapContext, *, similar: int = 3, alpha: float = 1.0,
             eigen_smooth: bool = False, counterfactual: bool = False) -> torch.Tensor:
    """Finer-CAM: Grad-CAM ``ReLU(sum_c mean_ij(dS_k/dA_c) A_c)`` of the comparison score
    ``S_k = sum_j p_j (y_k - alpha y_j) / sum_j p_j`` (:func:`finer_scores`).

    Options: ``similar`` (3) classes compared with, the closest in logit; ``alpha`` (1.0) the
    comparison strength (0 gives Grad-CAM of ``y_k``); ``eigen_smooth``, ``counterfactual``
    as for Grad-CAM. Class targets only. ``(B, K, h, w)``."""
    if isinstance(similar, bool) or not isinstance(similar, int) or similar < 1:
        raise ValueError(f"similar must be a positive integer, got {similar!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise ValueError(f"alpha must be a number, got {alpha!r}")
    a, g = activations_and_grads(
        ctx, counterfactual=counterfactual,
        score=lambda output, targets: finer_scores(output, targets, similar, alpha),
    )
    weighted = g.mean((-2, -1), keepdim=True) * a
    return channel_maps(weighted, eigen_smooth, counterfactual=counterfactual)
