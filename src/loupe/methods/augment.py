"""``aug_smooth``: test-time augmentation of a layer method, as pytorch-grad-cam's.

pytorch-grad-cam's ``aug_smooth=True`` runs the method on six views of each image, every
combination of a horizontal flip (no, yes) and a brightness factor (0.9, 1, 1.1) that
multiplies the input tensor (``ttach.Compose([HorizontalFlip(), Multiply([0.9, 1, 1.1])])``),
min-max scales each map, flips the flipped views' maps back and averages the six. Here the
six views of every image go through the method in one batch of ``6 B`` images.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import replace

import torch

from loupe.context import MapContext
from loupe.registry import MapFunction

FLIPS = (False, True)
FACTORS = (0.9, 1.0, 1.1)


def augmented_views(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W)`` -> the ``(B * 6, C, H, W)`` views, image-major (row ``6 b + v``), and
    ``(6,)`` bool, which of the six views are flipped."""
    flips = torch.tensor([f for f in FLIPS for _ in FACTORS], device=images.device)
    factors = torch.tensor([s for _ in FLIPS for s in FACTORS], dtype=images.dtype,
                           device=images.device)
    views = torch.where(flips[None, :, None, None, None], images.flip(-1)[:, None],
                        images[:, None])
    return (views * factors[None, :, None, None, None]).flatten(0, 1), flips


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map ``(M - min) / (max - min + 1e-7)`` over the last two dimensions (pytorch-grad-cam's
    ``scale_cam_image``); a constant map becomes 0."""
    flat = maps.flatten(-2)
    shifted = flat - flat.amin(-1, keepdim=True)
    return (shifted / (shifted.amax(-1, keepdim=True) + 1e-7)).view_as(maps)


def augmentation_smoothed(ctx: MapContext, function: MapFunction,
                          options: dict[str, object]) -> torch.Tensor:
    """``(B, K, h, w)``: the mean over the six views of ``minmax`` of ``function``'s maps, each
    flipped back to the image's orientation.

    Class targets are bound on the clean images first (top-1 of the unaugmented image), so
    every view explains the same class; pytorch-grad-cam takes each view's own top-1 when no
    targets are given. Score-function targets are applied to each view's output as given.
    """
    images = ctx.images
    targets = ctx.targets.ensure_bound(ctx.model, images)
    views, flips = augmented_views(images)
    n = len(flips)
    owner = torch.arange(images.shape[0], device=images.device).repeat_interleave(n)
    maps = function(replace(ctx, images=views, targets=targets.of_rows(owner)), **options)
    maps = maps.float().unflatten(0, (images.shape[0], n))  # (B, 6, K, h, w)
    maps = torch.where(flips[None, :, None, None, None], maps.flip(-1), maps)
    return minmax(maps).mean(1)


def aug_smoothable(function: MapFunction) -> MapFunction:
    """Give a layer method the option ``aug_smooth`` (default False): when True, the method's
    maps are :func:`augmentation_smoothed`. The wrapper's signature is the method's plus
    ``aug_smooth``, so ``explain`` checks options against it."""

    @functools.wraps(function)
    def wrapper(ctx: MapContext, *, aug_smooth: bool = False, **options: object) -> torch.Tensor:
        if not isinstance(aug_smooth, bool):
            raise ValueError(f"aug_smooth must be True or False, got {aug_smooth!r}")
        if aug_smooth:
            return augmentation_smoothed(ctx, function, options)
        return function(ctx, **options)

    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    option = inspect.Parameter("aug_smooth", inspect.Parameter.KEYWORD_ONLY, default=False,
                               annotation="bool")
    at = next((i for i, p in enumerate(parameters) if p.kind is p.VAR_KEYWORD), len(parameters))
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*parameters[:at], option, *parameters[at:]]
    )
    wrapper.__doc__ = (function.__doc__ or "").rstrip() + (
        "\n\n    aug_smooth: average the min-max scaled maps of six views of each image "
        "(horizontal flip x brightness 0.9, 1, 1.1; see :mod:`loupe.methods.augment`)."
    )
    return wrapper
