"""CAM: class activation maps of a network ending in global pooling + a linear layer.

Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016:
``CAM_k(i, j) = sum_c W_kc A_c(i, j)``, with ``W`` the final linear layer's weight and ``A``
the activation whose spatial mean (GAP) or maximum (GMP, the paper's comparison) the linear
layer reads. Raw (no ReLU, as in the paper and in torchcam's ``CAM``), so with GAP
``mean_ij CAM_k = logit_k - b_k``. One forward, no backward.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from loupe.context import MapContext
from loupe.methods.augment import aug_smoothable
from loupe.methods.heads import (
    CAMHead,
    HeadError,
    HeadSearch,
    allowed_difference,
    head_guess,
    head_search,
)
from loupe.registry import register
from loupe.targets import Targets

INF = float("inf")


def class_activation_maps(
    head: CAMHead, activation: torch.Tensor, classes: torch.Tensor, padded: bool = True
) -> torch.Tensor:
    """CAM of ``classes`` ``(B, K)`` (-1 = padding, zero map) from ``activation`` ``(B, C, h, w)``;
    ``padded=False`` promises that no class is padding (the zeroing is skipped).

    Returns ``(B, K, h, w)`` float32 maps ``sum_c W_kc f(A)_c`` with ``f`` the head's ReLU
    (DenseNet) or identity. With a LayerNorm between pooling and linear (ConvNeXt) its
    per-image centring and scaling and its weight are folded in:
    ``CAM_k = sum_c W_kc gamma_c (f(A)_c - mu) / sigma`` with ``mu, sigma`` the mean and
    standard deviation over channels of the pooled vector, so that with average pooling
    ``mean_ij CAM_k = logit_k - head.constant[k]`` in every case. With max pooling the maps
    are the same ``W · A`` (the paper's reading of its GMP networks).
    """
    features = activation.float()
    if head.relu:
        features = features.clamp(min=0)
    # (B, K, C): the classes' rows of W (embedding: one gather, no advanced-indexing parse)
    rows = F.embedding(classes.clamp(min=0) if padded else classes, head.weight.float())
    if head.norm_name is not None:
        if head.norm_weight is not None:
            rows = rows * head.norm_weight.float()
        pooled = head.spatial_pool(features)  # (B, C)
        mean = pooled.mean(1)
        std = (pooled.var(1, unbiased=False) + head.norm_eps).sqrt()
        maps = _weighted_sum(rows, features)
        maps = (maps - mean[:, None, None, None] * rows.sum(-1)[..., None, None]) / std[
            :, None, None, None
        ]
    else:
        maps = _weighted_sum(rows, features)
    return maps * (classes >= 0)[..., None, None].to(maps.dtype) if padded else maps


def checked_class_activation_maps(
    search: HeadSearch, activation: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor,
    padded: bool = True,
) -> torch.Tensor:
    """CAM of ``classes`` ``(B, K)`` from the first candidate head of ``search`` that reproduces
    each explained logit ``logits[b, classes[b, k]]`` (padding not compared), as
    :func:`loupe.methods.heads.find_cam_head` checks; raises its HeadError when none does.

    An average-pooling head is checked on its own maps, whose spatial means plus
    ``head.constant`` are the logits it gives (no second product with ``W``); a max-pooling
    head on :meth:`CAMHead.logits`."""
    logits = logits.float()
    scale = allowed_difference(activation, logits)
    smallest = INF
    for head in search.candidates():
        averaged = head.pool == "avg"
        maps = class_activation_maps(head, activation, classes, padded) if averaged else None
        error = _largest_difference(head, activation, classes, maps, logits, padded)
        if error <= scale:
            return maps if averaged else class_activation_maps(head, activation, classes, padded)
        smallest = min(smallest, error)
    raise search.failure(smallest)


def _largest_difference(head: CAMHead, activation: torch.Tensor, classes: torch.Tensor,
                        maps: torch.Tensor | None, logits: torch.Tensor, padded: bool) -> float:
    """The largest ``|logit the head gives - logit|`` over the real targets ``(B, K)`` of
    ``logits`` ``(B, N)``, read off ``maps`` (average pooling: their means are the logits less
    ``head.constant``) or from the head's logits (``maps`` None)."""
    rows = classes.clamp(min=0) if padded else classes
    if maps is not None:
        difference = maps.mean((-2, -1)) - (logits - head.constant.float()).gather(1, rows)
    else:
        difference = head.logits(activation).gather(1, rows) - logits.gather(1, rows)
    if padded:
        difference = difference * (classes >= 0)
    return float(torch.linalg.vector_norm(difference, INF))  # the largest |difference|


def _weighted_sum(rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``sum_c rows[b, k, c] features[b, c, i, j]``: ``(B, K, C)``, ``(B, C, h, w)`` ->
    ``(B, K, h, w)``, one batched matrix product (``einsum`` costs a parse per call)."""
    return torch.bmm(rows, features.flatten(2)).unflatten(2, features.shape[-2:])


def _memo_key(head: object) -> tuple[str, object]:
    return ("cam head", head)


def prepare_cam(model: nn.Module, layer: str | None, options: Mapping[str, object],
                memo: dict) -> None:
    """CAM's set-up for an explainer block: the model's linear head found from its modules
    (:func:`loupe.methods.heads.head_guess`), kept in ``memo`` for the block's calls."""
    head = options.get("head")
    search = head_guess(model, layer, head if isinstance(head, str) else None)
    if search is not None:
        memo[_memo_key(head)] = search


@register(
    "cam",
    uses_layer=True, gradients=False,
    paper="Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016",
    prepare=prepare_cam,
)
@aug_smoothable
def cam(ctx: MapContext, head: str | None = None) -> torch.Tensor:
    """CAM: ``sum_c W_kc A_c`` at the layer feeding the global-pooling + linear head.

    Options:
        head: module name of the final linear layer (``"fc"``); found automatically when None
            (see :mod:`loupe.methods.heads`). The head is always checked on this forward: it must
            reproduce the explained classes' logits from the spatial mean or maximum of the
            target layer (or of its ReLU), otherwise a ``HeadError`` (a ``ValueError``)
            explains what was found.

    Returns ``(B, K, h, w)`` raw maps at the target layer's resolution; padding targets give
    zero maps. Class targets only: score-function targets have no row of ``W``.
    """
    if ctx.targets.functions is not None:
        raise ValueError(
            "CAM explains class logits through the linear head's weights; score-function "
            "targets are not supported (use a gradient method such as gradcam)"
        )
    logits = ctx.inference_output()
    with torch.no_grad():
        targets = ctx.targets.bind(logits)
        activation = ctx.activation()
        return _memo_checked_maps(ctx, activation, logits, targets, head)


def _memo_checked_maps(ctx: MapContext, activation: torch.Tensor, logits: torch.Tensor,
                       targets: Targets, head: str | None) -> torch.Tensor:
    """:func:`checked_class_activation_maps` with the head search kept in ``ctx.memo``: an
    earlier one is used when it fits this forward and reproduces its logits; otherwise the
    head is searched for again (and that search's failure raised)."""
    key = _memo_key(head)
    kept = ctx.memo.get(key)
    if isinstance(kept, HeadSearch) and kept.fits(activation, logits):
        try:
            return checked_class_activation_maps(kept, activation, logits, targets.classes,
                                                 targets.padded)
        except HeadError:
            pass  # the model changed since the head was found: search again
    search = head_search(ctx.model, activation, logits, layer=ctx.layer, head=head)
    ctx.memo[key] = search
    return checked_class_activation_maps(search, activation, logits, targets.classes,
                                         targets.padded)
