"""Occlusion: how much each target score drops when a window of the image is covered.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, with
captum's ``Occlusion`` semantics: a window slides over the image with a stride, its pixels
(all colour channels) are replaced by a baseline, and every pixel gets the mean score drop
``S_k(x) - S_k(x with the window occluded)`` over the windows that cover it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from loupe.context import MapContext
from loupe.methods._perturb import (
    PERTURB_CHUNK,
    check_positive_int,
    perturb_chunk_size,
    perturbed_scores,
    zero_padding,
)
from loupe.methods.gradients import baselines_for
from loupe.registry import register
from loupe.targets import Targets


def _pair(name: str, value: object) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
    return check_positive_int(name, pair[0]), check_positive_int(name, pair[1])


def window_starts(size: int, window: int, stride: int, side: str = "height") -> torch.Tensor:
    """``(n,)`` first pixels of the windows along one side, captum's rule: ``i * stride`` for
    ``i = 0 .. ceil((size - window) / stride)``; the last window is clipped to the image."""
    if window > size:
        raise ValueError(f"window {side} {window} is larger than the image {side} {size}")
    if stride > window and window < size:
        raise ValueError(f"stride {side} {stride} is larger than the window {side} {window}: "
                         "some pixels would never be occluded")
    return torch.arange(math.ceil((size - window) / stride) + 1) * stride


def occlusion_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Targets,
    window: tuple[int, int],
    stride: tuple[int, int],
    baselines: torch.Tensor,
    chunk_size: int = PERTURB_CHUNK,
    repeated: bool = False,
) -> torch.Tensor:
    """``(B, K, H, W)``: at each pixel, the mean over the windows covering it of
    ``S_k(x) - S_k(x with the window set to the baseline)``.

    Args:
        images, baselines: ``(B, C, H, W)``.
        window, stride: ``(height, width)`` in pixels.
        chunk_size: occluded copies (of any images and windows) per forward.
        repeated: the call is one of an explainer block's (the occluded copies may go
            through the frozen copy of :func:`loupe._frozen.inference_forward`).

    The drops form a ``(B, K, n_y, n_x)`` grid over window positions; spreading each drop
    over its window and counting the windows per pixel are two transposed convolutions with
    a box of ones (stride = the stride), cropped to the image, so the last windows are clipped
    as captum clips them."""
    height, width = images.shape[-2:]
    ys = window_starts(height, window[0], stride[0]).to(images.device)
    xs = window_starts(width, window[1], stride[1], "width").to(images.device)
    count = ys.numel() * xs.numel()
    with torch.no_grad():
        output = model(images)
    targets = targets.bind(output)
    clean = targets.scores(output).float()  # (B, K)
    owner = torch.arange(images.shape[0], device=images.device).repeat_interleave(count)
    pixel_y = torch.arange(height, device=images.device)
    pixel_x = torch.arange(width, device=images.device)

    def build(rows: torch.Tensor) -> torch.Tensor:  # rows: image * count + window
        where = rows % count
        y0, x0 = ys[where // xs.numel(), None], xs[where % xs.numel(), None]
        inside_y = (pixel_y >= y0) & (pixel_y < y0 + window[0])  # (r, H)
        inside_x = (pixel_x >= x0) & (pixel_x < x0 + window[1])  # (r, W)
        covered = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (r, 1, H, W)
        b = owner[rows]
        return torch.where(covered, baselines[b], images[b])

    scores = perturbed_scores(model, targets, owner, build, chunk_size, repeated=repeated)
    batch, k = clean.shape
    drops = clean[:, None, :] - scores.view(batch, count, k)  # (B, windows, K)
    drops = drops.transpose(1, 2).reshape(batch * k, 1, ys.numel(), xs.numel())
    box = drops.new_ones(1, 1, *window)
    spread = F.conv_transpose2d(drops, box, stride=stride)[..., :height, :width]
    covers = F.conv_transpose2d(torch.ones_like(drops[:1]), box, stride=stride)
    maps = spread / covers[..., :height, :width]
    return zero_padding(maps.view(batch, k, height, width), targets)


@register(
    "occlusion", uses_layer=False, gradients=False,
    paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
)
def occlusion(
    ctx: MapContext,
    *,
    window: int | tuple[int, int] = 16,
    stride: int | tuple[int, int] = 8,
    baseline: object = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Occlusion: ``M_k(p) = mean over windows w covering p of S_k(x) - S_k(x_w)``, ``x_w`` the
    image with window ``w`` (all channels) set to the baseline (Zeiler & Fergus 2014).

    Equals captum's ``Occlusion(model).attribute(x, target, sliding_window_shapes=(C, *window),
    strides=(C, *stride), baselines=baseline)`` at any colour channel (tested to 1e-4); the
    target scores are the raw outputs (logits).

    Options: ``window`` (16: 16x16 pixels, or ``(height, width)``); ``stride`` (8, or a pair;
    at most the window, unless the window spans that side); ``baseline`` (None = zeros, a
    number, ``"mean"``, or a tensor, see :func:`loupe.methods.gradients.baselines_for`);
    ``chunk_size`` (occluded copies per forward, across images and windows; None: 32 on CUDA,
    on the CPU fewer for large inputs, see :func:`~loupe.methods._perturb.perturb_chunk_size`;
    maps do not depend on it). Returns
    ``(B, K, H, W)`` at the input's resolution. Cost: ``1 + ceil(B n_y n_x / chunk_size)``
    forwards under ``torch.no_grad``, ``n = ceil((side - window) / stride) + 1`` per side.
    """
    images = ctx.images
    window_hw, stride_hw = _pair("window", window), _pair("stride", stride)
    chunk_size = perturb_chunk_size(chunk_size, images)
    return occlusion_maps(ctx.model, images, ctx.targets, window_hw, stride_hw,
                          baselines_for(images, baseline), chunk_size, ctx.repeated)
