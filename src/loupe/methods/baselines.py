"""Model-free baselines: maps that look at no model, to expose what the data alone scores.

Why they exist
    A pseudo-mask benchmark rewards more than explanation quality: VOC images are mostly
    background, and objects sit mostly in the middle of the frame. A map that says "nothing
    is an object" already earns the background IoU, and a fixed blob in the centre earns part
    of every centred object. Any method worth reporting must beat both; a method that does
    not is measuring the data set's bias, not the classifier. Neither calls the model.
"""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.registry import register


def _zero_padding(maps: torch.Tensor, ctx: MapContext) -> torch.Tensor:
    valid = ctx.targets.valid
    if valid is None:
        return maps
    return maps * valid.to(maps.device)[..., None, None]


@register(
    "baseline-background",
    uses_layer=False,
    paper="model-free baseline (all background): the score of predicting no object",
)
def baseline_background(ctx: MapContext) -> torch.Tensor:
    """All-zero maps ``(B, K, H, W)``: every pixel is background at any threshold, so the
    mIoU is the background IoU alone (1/N of a perfect score at best)."""
    b, _, h, w = ctx.images.shape
    return ctx.images.new_zeros(b, ctx.targets.count, h, w)


def centred_gaussian(
    height: int, width: int, sigma: float, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(H, W)`` isotropic Gaussian ``exp(-((y - cy)^2 + (x - cx)^2) / (2 sigma^2))``
    centred at ``((H - 1) / 2, (W - 1) / 2)``, peak 1; ``sigma`` in pixels."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    y = torch.arange(height, dtype=torch.float64, device=device) - (height - 1) / 2
    x = torch.arange(width, dtype=torch.float64, device=device) - (width - 1) / 2
    squared = y[:, None] ** 2 + x[None, :] ** 2
    return torch.exp(-squared / (2 * sigma**2)).to(dtype)


@register(
    "baseline-gaussian",
    uses_layer=False,
    paper="model-free baseline (centre bias): a centred isotropic Gaussian",
)
def baseline_gaussian(ctx: MapContext, sigma: float = 0.25) -> torch.Tensor:
    """The same centred Gaussian for every image and target, ``(B, K, H, W)``.

    ``sigma`` is a fraction of the shorter image side (default a quarter). It scores the
    centre bias of a data set: how much of the objects a fixed central blob covers.
    Padding targets (-1) get zero maps, as with every method."""
    if not sigma > 0:
        raise ValueError(f"sigma must be a positive fraction of the image side, got {sigma}")
    b, _, h, w = ctx.images.shape
    blob = centred_gaussian(h, w, sigma * min(h, w), dtype=ctx.images.dtype,
                            device=ctx.images.device)
    maps = blob.expand(b, ctx.targets.count, h, w).clone()
    return _zero_padding(maps, ctx)
