"""Shared step of the gradient-weighted CAM family: one forward, one batched backward."""

from __future__ import annotations

from collections.abc import Callable

import torch

from loupe._autograd import grads_per_target
from loupe.context import MapContext
from loupe.targets import Targets

# A custom score of the targets: (model output, bound targets) -> (B, K) scores.
ScoreOf = Callable[[torch.Tensor, Targets], torch.Tensor]


def activations_and_grads(
    ctx: MapContext, *, counterfactual: bool = False, score: ScoreOf | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target layer's activation ``A`` as ``(B, 1, C, h, w)`` and the gradients of every
    target score with respect to it, ``(B, K, C, h, w)``.

    One forward of the images; gradients reach only from the output back to the layer (the
    layer's output is a leaf, so nothing before it is recorded or differentiated). ``score``
    replaces the targets' own scores (Finer-CAM's comparison score); ``counterfactual``
    differentiates the negated score ``-S`` (Grad-CAM's counterfactual explanations, Selvaraju
    et al. 2017, Section 6: the regions whose removal would raise the score)."""
    if not isinstance(counterfactual, bool):
        raise ValueError(f"counterfactual must be True or False, got {counterfactual!r}")
    split = ctx.leaf_and_output()  # the frozen copy's way, where it may be taken
    output = ctx.model(ctx.images) if split is None else split[1]
    targets = ctx.targets.bind(output)
    scores = targets.scores(output) if score is None else score(output, targets)
    if counterfactual:
        scores = -scores
    raw = ctx.captured[ctx.layer]
    grads = grads_per_target(scores, raw)  # (K, B, ...)
    k, b = grads.shape[:2]
    activation = ctx.reshape(raw.detach()).float()
    grid = ctx.reshape(grads.flatten(0, 1)).float()
    grid = grid.unflatten(0, (k, b)).transpose(0, 1)
    return activation[:, None], grid
