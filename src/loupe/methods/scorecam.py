"""Score-CAM: channel weights from the scores of the input masked by each upsampled channel.

Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
Networks", CVPR-W 2020. Gradient-free: every channel ``A_c`` of the target layer is upsampled
to the input size and min-max scaled to a mask ``H_c`` in [0, 1]; the model scores the masked
input ``X * H_c``; those scores, normalised over channels, weight the channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from loupe.context import MapContext
from loupe.methods._perturb import (
    perturb_chunk_size,
    perturbed_scores,
    zero_padding,
)
from loupe.methods.augment import aug_smoothable
from loupe.methods.projection import channel_maps
from loupe.registry import register
from loupe.targets import Targets


def channel_masks(activation: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(n, h, w)`` activation channels -> ``(n, 1, H, W)`` masks in [0, 1].

    Bilinear upsampling with ``align_corners=True`` (pytorch-grad-cam's
    ``UpsamplingBilinear2d``), then per-mask ``(U - min) / (max - min + 1e-8)``."""
    upsampled = F.interpolate(
        activation[:, None].float(), size=size, mode="bilinear", align_corners=True
    )
    flat = upsampled.flatten(1)
    low = flat.min(1).values[:, None, None, None]
    high = flat.max(1).values[:, None, None, None]
    return (upsampled - low) / (high - low + 1e-8)


def masked_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    activation: torch.Tensor,
    targets: Targets,
    chunk_size: int,
    *,
    masks: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] = channel_masks,
    scales: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``(B, C, K)``: the K target scores of each image masked by each of its C channel masks.

    ``masks`` turns ``(n, h, w)`` activation channels into ``(n, 1, H, W)`` masks
    (:func:`channel_masks` by default). With ``scales`` ``(S,)``, each image is scored masked
    by ``s * H_c`` for every scale ``s`` and the S scores are averaged (IS-CAM's integration);
    without, ``S = 1`` and ``s = 1``.

    The masked inputs are built and run ``chunk_size`` at a time, across scales, images and
    channels; one forward of a masked input serves all K targets of its image. A channel that
    is zero everywhere (common after a ReLU: about a fifth of MobileNetV2's last layer on
    photos) has an all-zero mask, so its masked input is the zero image whatever the image
    and the scale: it is scored once, by one forward of a zero image, not once per channel.
    Call under ``torch.no_grad``. ``progress(done, total)`` is called after each chunk with
    the masked inputs scored so far and their number."""
    batch, channels = activation.shape[:2]
    flat = activation.flatten(0, 1)  # (B*C, h, w), image-major
    owner = torch.arange(batch, device=images.device).repeat_interleave(channels)
    live = flat.flatten(1).ne(0).any(1).nonzero().flatten()  # channels not zero everywhere
    factors = images.new_ones(1) if scales is None else scales.to(images)
    size = images.shape[-2:]

    def build(rows: torch.Tensor) -> torch.Tensor:  # rows: (scale, live channel), scale-major
        index = live[rows % live.numel()]
        scaled = masks(flat[index], size) * factors[rows // live.numel(), None, None, None]
        return images[owner[index]] * scaled.to(images.dtype)

    scores = torch.empty(batch * channels, targets.count, device=images.device)
    if live.numel():
        per_scale = perturbed_scores(
            model, targets, owner[live].repeat(factors.numel()), build, chunk_size,
            progress=progress,
        )
        scores[live] = per_scale.view(factors.numel(), live.numel(), -1).mean(0)
    dead = flat.flatten(1).eq(0).all(1).nonzero().flatten()
    if dead.numel():
        blank = model(torch.zeros_like(images[:1]))  # the masked input of every dead channel
        output = blank.expand(dead.numel(), *blank.shape[1:])
        scores[dead] = targets.of_rows(owner[dead]).scores(output).float()
    return scores.view(batch, channels, -1)


def score_weighted_maps(
    scores: torch.Tensor, activation: torch.Tensor, targets: Targets, eigen_smooth: bool = False
) -> torch.Tensor:
    """``L_k = ReLU(sum_c softmax_c(scores_ck) A_c)``: ``(B, K, h, w)`` maps from the
    ``(B, C, K)`` scores of the channel masks and the activation ``(B, C, h, w)``; padding
    targets get zero maps. ``eigen_smooth``: the first principal component of the weighted
    activations instead of their sum (:func:`loupe.methods.projection.channel_maps`)."""
    weights = scores.softmax(dim=1)  # over channels: (B, C, K)
    if eigen_smooth:
        weighted = weights.transpose(1, 2)[..., None, None] * activation.float()[:, None]
        maps = channel_maps(weighted, eigen_smooth)
    else:
        maps = torch.einsum("bck,bchw->bkhw", weights, activation.float()).clamp(min=0)
    return zero_padding(maps, targets)


@register("scorecam", uses_layer=True, gradients=False,
          paper="Wang et al., Score-CAM, CVPR-W 2020")
@aug_smoothable
def scorecam(ctx: MapContext, chunk_size: int | None = None, eigen_smooth: bool = False,
             ) -> torch.Tensor:
    """Score-CAM as pytorch-grad-cam computes it (its ``ScoreCAM``, matched to float precision):

    ``L_k = ReLU(sum_c softmax_c(S_k(X * H_c)) A_c)``, ``H_c = minmax(Up(A_c))``,

    with ``S_k`` the raw target score (the logit), ``Up`` bilinear with ``align_corners=True``
    to the input size and the softmax taken over the C channels.

    The paper defines the weight of channel ``c`` as its "channel-wise increase of confidence"
    ``S_k(X * H_c) - S_k(X_b)`` for a baseline ``X_b``; the authors' code (haofanwang/Score-CAM)
    uses the softmax class probability of the masked input directly (no baseline, no channel
    softmax, constant channels skipped) and ``align_corners=False``. The channel softmax used
    here makes the baseline term irrelevant (it is constant over channels and softmax is
    shift-invariant), but it weights channels by ``exp(logit)`` rather than linearly by class
    probability, so the relative channel weights, and hence the maps, differ from the
    authors' code.

    Options:
        chunk_size: masked inputs per forward pass (None: 32 on CUDA, on the CPU fewer for
            large inputs, :func:`~loupe.methods._perturb.perturb_chunk_size`); maps do not
            depend on it (up to float rounding).
        eigen_smooth: see :func:`loupe.methods.projection.channel_maps`.

    Returns ``(B, K, h, w)`` at the target layer's resolution; padding targets give zero maps.
    Cost: ``1 + ceil(B * C' / chunk_size)`` forwards of the model, all under ``torch.no_grad``,
    with ``C'`` the channels that are not zero everywhere (plus one forward of a zero image,
    which scores all the others; see :func:`masked_scores`).
    """
    chunk_size = perturb_chunk_size(chunk_size, ctx.images)
    with torch.no_grad():
        output = ctx.model(ctx.images)
        targets = ctx.targets.bind(output)
        activation = ctx.activation()
        scores = masked_scores(ctx.model, ctx.images, activation, targets, chunk_size,
                               progress=ctx.report_rows)
    return score_weighted_maps(scores, activation, targets, eigen_smooth)
