"""Shared step of the gradient-weighted CAM family: one forward, one batched backward."""

from __future__ import annotations

import torch

from loupe._autograd import grads_per_target
from loupe.context import MapContext


def activations_and_grads(ctx: MapContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The target layer's activation ``A`` as ``(B, 1, C, h, w)`` and the gradients of every
    target score with respect to it, ``(B, K, C, h, w)``.

    One forward of the images; gradients reach only from the output back to the layer (the
    layer's output is a leaf, so nothing before it is recorded or differentiated)."""
    output = ctx.model(ctx.images)
    targets = ctx.targets.bind(output)
    scores = targets.scores(output)
    raw = ctx.captured[ctx.layer]
    grads = grads_per_target(scores, raw)  # (K, B, ...)
    k, b = grads.shape[:2]
    activation = ctx.reshape(raw.detach()).float()
    grid = ctx.reshape(grads.flatten(0, 1)).float()
    grid = grid.unflatten(0, (k, b)).transpose(0, 1)
    return activation[:, None], grid
