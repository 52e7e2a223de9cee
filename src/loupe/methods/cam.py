"""CAM: class activation maps of a network ending in global pooling + a linear layer.

Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016:
``CAM_k(i, j) = sum_c W_kc A_c(i, j)``, with ``W`` the final linear layer's weight and ``A``
the activation whose spatial mean (GAP) or maximum (GMP, the paper's comparison) the linear
layer reads. Raw (no ReLU, as in the paper and in torchcam's ``CAM``), so with GAP
``mean_ij CAM_k = logit_k - b_k``. One forward, no backward.
"""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.methods.augment import aug_smoothable
from loupe.methods.heads import CAMHead, find_cam_head
from loupe.registry import register


def class_activation_maps(
    head: CAMHead, activation: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """CAM of ``classes`` ``(B, K)`` (-1 = padding, zero map) from ``activation`` ``(B, C, h, w)``.

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
    rows = head.weight.float()[classes.clamp(min=0)]  # (B, K, C)
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
    return maps * (classes >= 0)[..., None, None].to(maps.dtype)


def _weighted_sum(rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``sum_c rows[b, k, c] features[b, c, i, j]``: ``(B, K, C)``, ``(B, C, h, w)`` ->
    ``(B, K, h, w)``, one batched matrix product (``einsum`` costs a parse per call)."""
    return (rows @ features.flatten(2)).unflatten(2, features.shape[-2:])


@register(
    "cam",
    uses_layer=True, gradients=False,
    paper="Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016",
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
    with torch.no_grad():
        logits = ctx.model(ctx.images)
        targets = ctx.targets.bind(logits)
        activation = ctx.activation()
        found = find_cam_head(ctx.model, activation, logits, layer=ctx.layer, head=head,
                              classes=targets.classes)
        return class_activation_maps(found, activation, targets.classes)
