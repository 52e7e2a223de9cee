"""SS-CAM and IS-CAM: Score-CAM with channel weights smoothed over noisy or scaled masks.

Both keep Score-CAM's map ``L_k = ReLU(sum_c softmax_c(w_ck) A_c)`` and only change how the
score ``w_ck`` of channel ``c`` is measured: SS-CAM averages the scores of the image masked by
``N`` noisy copies of the channel's mask, IS-CAM the scores of the image masked by ``N``
growing multiples of it. The masks are torchcam's: each channel is min-max scaled at the
layer's resolution, then upsampled bilinearly (``align_corners=False``) to the input size.
Masked copies of all images, channels and samples share Score-CAM's batched scoring loop
(:func:`loupe.methods.scorecam.masked_scores`, :func:`loupe.methods._perturb.perturbed_scores`).
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from loupe.context import MapContext
from loupe.methods._perturb import (
    check_positive_int,
    perturb_chunk_size,
    perturbed_scores,
    seeded_generator,
)
from loupe.methods.augment import aug_smoothable
from loupe.methods.scorecam import masked_scores, score_weighted_maps
from loupe.registry import register
from loupe.targets import Targets


def scaled_channel_masks(activation: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(n, h, w)`` activation channels -> ``(n, 1, H, W)`` masks in [0, 1], as torchcam's
    Score-CAM family builds them: ``Up((A - min A) / (max A - min A + 1e-8))`` with ``Up``
    bilinear, ``align_corners=False``. A constant channel gives an all-zero mask."""
    flat = activation.float().flatten(1)
    low = flat.amin(1)[:, None, None]
    shifted = activation.float() - low
    scaled = shifted / (shifted.flatten(1).amax(1)[:, None, None] + 1e-8)
    return F.interpolate(scaled[:, None], size=size, mode="bilinear", align_corners=False)


def integration_scales(n_samples: int) -> torch.Tensor:
    """IS-CAM's ``(N,)`` mask multiples ``c_i = sum_{j=1..i} j / N``, i = 1..N, as torchcam's
    ``ISCAM`` accumulates them (``c_1 = 1/N`` ... ``c_N = (N + 1) / 2``)."""
    steps = torch.arange(1, n_samples + 1, dtype=torch.float64) / n_samples
    return steps.cumsum(0).float()


def noisy_mask_scores(
    model: nn.Module,
    images: torch.Tensor,
    activation: torch.Tensor,
    targets: Targets,
    stdev: float,
    n_samples: int,
    generator: torch.Generator,
    chunk_size: int,
) -> torch.Tensor:
    """``(B, C, K)``: ``1/N sum_s S_k(X * (H_c + stdev z_sc))``, SS-CAM's smoothed scores.

    ``H_c`` are :func:`scaled_channel_masks`; ``z_s`` ``(C, H, W)`` is the s-th standard
    normal draw of ``generator`` (drawn one sample after the other, on the generator's
    device), the same for every image, so an image's scores do not depend on its batch. The
    ``B * C`` masked copies of a sample go through the model ``chunk_size`` at a time."""
    batch, channels = activation.shape[:2]
    flat = activation.flatten(0, 1)  # (B*C, h, w), image-major
    owner = torch.arange(batch, device=images.device).repeat_interleave(channels)
    size = images.shape[-2:]
    total = torch.zeros(batch * channels, targets.count, device=images.device)
    for _ in range(n_samples):
        noise = torch.randn((channels, *size), generator=generator, device=generator.device)
        noise = noise.to(device=images.device, dtype=torch.float32)

        def build(rows: torch.Tensor, noise: torch.Tensor = noise) -> torch.Tensor:
            masks = scaled_channel_masks(flat[rows], size) + stdev * noise[rows % channels, None]
            return images[owner[rows]] * masks.to(images.dtype)

        total += perturbed_scores(model, targets, owner, build, chunk_size)
    return (total / n_samples).view(batch, channels, -1)


@register(
    "sscam", uses_layer=True, gradients=False, stochastic=True,
    paper="Wang et al., SS-CAM: Smoothed Score-CAM, arXiv 2006.14255, 2020",
)
@aug_smoothable
def sscam(
    ctx: MapContext,
    *,
    n_samples: int = 35,
    stdev: float = 2.0,
    chunk_size: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SS-CAM: ``L_k = ReLU(sum_c softmax_c(1/N sum_s S_k(X * (H_c + d_s))) A_c)``,
    ``d_s ~ N(0, stdev^2)`` per pixel of the mask (Wang et al. 2020, noise on the masks).

    Matches torchcam's ``SSCAM`` given the same noise (tested to 1e-4): masks as
    :func:`scaled_channel_masks`, raw scores (logits), softmax over the C channels
    (torchcam's subtraction of the clean image's score is a constant over channels, which the
    softmax ignores).

    Options: ``n_samples`` (N, 35) and ``stdev`` (2.0), torchcam's defaults; ``chunk_size``
    (masked copies per forward; None: see :func:`~loupe.methods._perturb.perturb_chunk_size`);
    ``seed`` (0) or a ``generator`` (used instead). The N
    noise draws ``(C, H, W)`` are shared by all images, so the same seed gives the same maps
    on any batch and chunk size. Returns ``(B, K, h, w)`` at the layer's resolution. Cost:
    ``1 + N * ceil(B * C / chunk_size)`` forwards, all under ``torch.no_grad``.
    """
    check_positive_int("n_samples", n_samples)
    chunk_size = perturb_chunk_size(chunk_size, ctx.images)
    if isinstance(stdev, bool) or not isinstance(stdev, Real) or not 0 <= stdev < math.inf:
        raise ValueError(f"stdev must be a finite number >= 0, got {stdev!r}")
    draws = seeded_generator(seed, generator)
    with torch.no_grad():
        targets = ctx.targets.bind(ctx.model(ctx.images))
        activation = ctx.activation()
        scores = noisy_mask_scores(ctx.model, ctx.images, activation, targets, float(stdev),
                                   n_samples, draws, chunk_size)
    return score_weighted_maps(scores, activation, targets)


@register(
    "iscam", uses_layer=True, gradients=False,
    paper="Naidu et al., IS-CAM: Integrated Score-CAM, arXiv 2010.03023, 2020",
)
@aug_smoothable
def iscam(
    ctx: MapContext, *, n_samples: int = 10, chunk_size: int | None = None
) -> torch.Tensor:
    """IS-CAM: ``L_k = ReLU(sum_c softmax_c(1/N sum_i S_k(X * c_i H_c)) A_c)`` with
    ``c_i = sum_{j=1..i} j/N`` (Naidu et al. 2020, the scores integrated along growing masks).

    Matches torchcam's ``ISCAM`` (tested to 1e-4): masks as :func:`scaled_channel_masks`,
    multiples as :func:`integration_scales` (torchcam's docstring writes ``j = 0..i-1``, its
    code ``j = 1..i``; this follows the code), raw scores, softmax over the C channels.

    Options: ``n_samples`` (N, 10, torchcam's default); ``chunk_size`` (masked copies per
    forward, across images, channels and steps; None: see
    :func:`~loupe.methods._perturb.perturb_chunk_size`). Deterministic. Returns ``(B, K, h, w)`` at
    the layer's resolution. Cost: ``1 + ceil(N * B * C' / chunk_size)`` forwards under
    ``torch.no_grad``, with ``C'`` the channels not zero everywhere (the others mask to the
    zero image at every step and are scored by one forward of it).
    """
    check_positive_int("n_samples", n_samples)
    chunk_size = perturb_chunk_size(chunk_size, ctx.images)
    with torch.no_grad():
        targets = ctx.targets.bind(ctx.model(ctx.images))
        activation = ctx.activation()
        scores = masked_scores(ctx.model, ctx.images, activation, targets, chunk_size,
                               masks=scaled_channel_masks, scales=integration_scales(n_samples))
    return score_weighted_maps(scores, activation, targets)
