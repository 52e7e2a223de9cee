"""Score-CAM: channel weights from the scores of the input masked by each upsampled channel.

Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
Networks", CVPR-W 2020. Gradient-free: every channel ``A_c`` of the target layer is upsampled
to the input size and min-max scaled to a mask ``H_c`` in [0, 1]; the model scores the masked
input ``X * H_c``; those scores, normalised over channels, weight the channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from loupe.context import MapContext
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
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``(B, C, K)``: the K target scores of each image masked by each of its C channel masks.

    The masked inputs are built and run ``chunk_size`` at a time, across images and channels;
    one forward of a masked input serves all K targets of its image. A channel that is zero
    everywhere (common after a ReLU: about a fifth of MobileNetV2's last layer on photos) has
    an all-zero mask, so its masked input is the zero image whatever the image: it is scored
    once, by one forward of a zero image, not once per channel. Call under
    ``torch.no_grad``. ``progress(done, total)`` is called after each chunk with the masked
    inputs scored so far and their number."""
    batch, channels = activation.shape[:2]
    flat = activation.flatten(0, 1)  # (B*C, h, w), image-major
    owner = torch.arange(batch, device=images.device).repeat_interleave(channels)
    live = flat.flatten(1).ne(0).any(1)  # (B*C,): False for all-zero channels
    scores = torch.empty(batch * channels, targets.count, device=images.device)
    todo = live.nonzero().flatten()
    for done, rows in enumerate(todo.split(chunk_size), start=1):
        masks = channel_masks(flat[rows], images.shape[-2:])
        output = model(images[owner[rows]] * masks.to(images.dtype))
        scores[rows] = _chunk_targets(targets, owner[rows]).scores(output).float()
        if progress is not None:
            progress(min(done * chunk_size, todo.numel()), todo.numel())
    dead = (~live).nonzero().flatten()
    if dead.numel():
        blank = model(torch.zeros_like(images[:1]))  # the masked input of every dead channel
        output = blank.expand(dead.numel(), *blank.shape[1:])
        scores[dead] = _chunk_targets(targets, owner[dead]).scores(output).float()
    return scores.view(batch, channels, -1)


def _chunk_targets(targets: Targets, owner: torch.Tensor) -> Targets:
    """The targets of a chunk whose row ``i`` is a copy of image ``owner[i]``."""
    if targets.classes is None:
        return replace(targets, batch_size=owner.numel())
    return replace(targets, batch_size=owner.numel(), classes=targets.classes[owner])


@register("scorecam", uses_layer=True, paper="Wang et al., Score-CAM, CVPR-W 2020")
def scorecam(ctx: MapContext, chunk_size: int = 32) -> torch.Tensor:
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
        chunk_size: masked inputs per forward pass (default 32); maps do not depend on it
            (up to float rounding).

    Returns ``(B, K, h, w)`` at the target layer's resolution; padding targets give zero maps.
    Cost: ``1 + ceil(B * C' / chunk_size)`` forwards of the model, all under ``torch.no_grad``,
    with ``C'`` the channels that are not zero everywhere (plus one forward of a zero image,
    which scores all the others; see :func:`masked_scores`).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    with torch.no_grad():
        output = ctx.model(ctx.images)
        targets = ctx.targets.bind(output)
        activation = ctx.activation()
        scores = masked_scores(ctx.model, ctx.images, activation, targets, chunk_size,
                               ctx.report_rows)
        weights = scores.softmax(dim=1)  # over channels: (B, C, K)
        maps = torch.einsum("bck,bchw->bkhw", weights, activation.float()).clamp(min=0)
    if targets.valid is not None:
        maps = maps * targets.valid[..., None, None].to(maps.dtype)
    return maps
