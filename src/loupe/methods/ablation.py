"""Ablation-CAM: channel weights from the score drop when each channel is zeroed.

Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
Gradient-free Localization", WACV 2020: ``w_c = (S - S_c) / S`` with ``S`` the target score
and ``S_c`` the score when channel ``c`` of the target layer is set to zero, and
``L = ReLU(sum_c w_c A_c)``.

Batched: the layers before the target layer are not re-run per channel. A hook on the target
layer (``loupe.hooks.hooked(edit=)``) replaces the layer's output of one image by ``n`` copies
of its activation, each with a different channel zeroed, so one forward of that image runs
the rest of the network on ``n`` ablations at once. The layers up to the target layer run once
per chunk of ``n`` ablations, not once per channel as in pytorch-grad-cam's ``AblationCAM``.
Only one image enters each forward, so tensors that skip over the target layer (a residual
stream around it, a class token) have batch 1 and broadcast over the ``n`` copies.
"""

from __future__ import annotations

import torch
from torch import nn

from loupe.context import MapContext
from loupe.hooks import hooked
from loupe.methods.augment import aug_smoothable
from loupe.methods.projection import channel_maps
from loupe.registry import register
from loupe.targets import Targets


def ablated_copies(activation: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """``(C, ...)`` one image's activation, channels first, and ``(n,)`` channel indices ->
    ``(n, C, ...)`` copies, copy ``i`` with channel ``channels[i]`` set to zero."""
    copies = activation.expand(len(channels), *activation.shape).clone()
    copies[torch.arange(len(channels), device=copies.device), channels] = 0
    return copies


def ablation_scores(model: nn.Module, images: torch.Tensor, layer: str, raw: torch.Tensor,
                    targets: Targets, clean: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``(B, C, K)``: the K target scores of each image with each channel of ``layer``'s
    output ``raw`` zeroed (``(B, C, h, w)``, or tokens ``(B, N, C)`` with the channel last).

    A channel that is zero everywhere (after a ReLU) is unchanged by its ablation: it keeps
    the clean score ``clean`` ``(B, K)`` without a forward. Call under ``torch.no_grad``."""
    channel_axis = 1 if raw.dim() == 4 else raw.dim() - 1
    moved = raw.movedim(channel_axis, 1)  # (B, C, ...)
    live = moved.flatten(2).ne(0).any(2)  # (B, C)
    scores = clean[:, None, :].repeat(1, moved.shape[1], 1)
    rows: list[torch.Tensor] = []
    with hooked(model, leaf=False, edit={layer: lambda output: rows[-1]}):
        for b in range(images.shape[0]):
            for channels in live[b].nonzero().flatten().split(chunk_size):
                rows.append(ablated_copies(moved[b], channels).movedim(1, channel_axis))
                output = model(images[b : b + 1])
                owner = torch.full((len(channels),), b, device=images.device)
                scores[b, channels] = targets.of_rows(owner).scores(output).float()
                rows.clear()
    return scores


def ablation_weights(clean: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """``(B, C, K)`` weights ``(S - S_c) / S`` from clean scores ``(B, K)`` and ablated scores
    ``(B, C, K)``; a target whose clean score is exactly 0 (padding) gets zero weights."""
    clean = clean[:, None, :]
    safe = torch.where(clean == 0, 1.0, clean)
    return torch.where(clean == 0, 0.0, (clean - ablated) / safe)


@register("ablationcam", uses_layer=True, gradients=False,
          paper="Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep Convolutional "
          "Network via Gradient-free Localization, WACV 2020")
@aug_smoothable
def ablationcam(ctx: MapContext, *, chunk_size: int = 256,
                eigen_smooth: bool = False) -> torch.Tensor:
    """Ablation-CAM: ``ReLU(sum_c (S - S_c) / S * A_c)``, ``S_c`` the score with channel ``c``
    of the target layer set to zero (the paper's ablation; pytorch-grad-cam sets it to
    ``min(A) - 1e7`` instead when the layer's activations are not all >= 0 with a zero).

    Options: ``chunk_size`` (256): ablated copies per forward of the layers after the target
    layer; maps do not depend on it. ``eigen_smooth``: see
    :func:`loupe.methods.projection.channel_maps`. Cost per image: one clean forward, then
    ``ceil(C' / chunk_size)`` forwards of the image whose target layer output is replaced by
    the chunk's ablations, ``C'`` the channels not zero everywhere. No backward.
    Returns ``(B, K, h, w)`` at the target layer's resolution."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    with torch.no_grad():
        output = ctx.model(ctx.images)
        targets = ctx.targets.bind(output)
        clean = targets.scores(output).float()
        raw = ctx.captured[ctx.layer]
        activation = ctx.activation().float()  # read before the ablations overwrite it
        channels = raw.shape[1 if raw.dim() == 4 else -1]
        if raw.dim() not in (3, 4) or channels != activation.shape[1]:
            raise ValueError(
                f"ablationcam needs a target layer whose output is (B, C, h, w) or tokens "
                f"(B, N, C); layer {ctx.layer!r} gives {tuple(raw.shape)}"
            )
        ablated = ablation_scores(ctx.model, ctx.images, ctx.layer, raw, targets, clean,
                                  chunk_size)
        weights = ablation_weights(clean, ablated)  # (B, C, K)
        weighted = weights.transpose(1, 2)[..., None, None] * activation[:, None]
        return channel_maps(weighted, eigen_smooth)
