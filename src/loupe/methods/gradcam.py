"""The gradient-weighted CAM family. Each method only says how to weight the activations;
maps are ``ReLU(sum_c weights_c * A_c)`` at the target layer's resolution.

Options of every method here: ``eigen_smooth`` (the first principal component of the weighted
activations instead of their sum, see :func:`loupe.methods.projection.channel_maps`),
``counterfactual`` (explain the negated score, Grad-CAM's Section 6) and ``aug_smooth``
(:mod:`loupe.methods.augment`).
"""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.methods._layer_grads import activations_and_grads
from loupe.methods.augment import aug_smoothable
from loupe.methods.projection import channel_maps
from loupe.registry import register


@register("gradcam", uses_layer=True, paper="Selvaraju et al., Grad-CAM, ICCV 2017")
@aug_smoothable
def gradcam(
    ctx: MapContext, *, eigen_smooth: bool = False, counterfactual: bool = False
) -> torch.Tensor:
    """Grad-CAM: ``ReLU(sum_c mean_ij(dS/dA_c) * A_c)``; with ``counterfactual``, ``S`` is
    replaced by ``-S`` (the paper's counterfactual explanation, Section 6)."""
    a, g = activations_and_grads(ctx, counterfactual=counterfactual)
    weighted = g.mean((-2, -1), keepdim=True) * a
    return channel_maps(weighted, eigen_smooth, counterfactual=counterfactual)


def gradcam_plus_plus_weights(a: torch.Tensor, g: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Grad-CAM++ channel weights ``sum_ij alpha_ij ReLU(g_ij)`` with
    ``alpha = g^2 / (2 g^2 + sum_ij(A) g^3)`` (the exponential-score closed form)."""
    g2 = g.pow(2)
    alpha = g2 / (2 * g2 + a.sum((-2, -1), keepdim=True) * g2 * g + eps)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return (alpha * g.clamp(min=0)).sum((-2, -1), keepdim=True)


@register("gradcam++", uses_layer=True, paper="Chattopadhay et al., Grad-CAM++, WACV 2018")
@aug_smoothable
def gradcam_plus_plus(
    ctx: MapContext, *, eigen_smooth: bool = False, counterfactual: bool = False
) -> torch.Tensor:
    """Grad-CAM++: ``ReLU(sum_c (sum_ij alpha^c_ij ReLU(dS/dA_c,ij)) * A_c)``."""
    a, g = activations_and_grads(ctx, counterfactual=counterfactual)
    weighted = gradcam_plus_plus_weights(a, g) * a
    return channel_maps(weighted, eigen_smooth, counterfactual=counterfactual)


@register("xgradcam", uses_layer=True, paper="Fu et al., Axiom-based Grad-CAM, BMVC 2020")
@aug_smoothable
def xgradcam(
    ctx: MapContext, *, eigen_smooth: bool = False, counterfactual: bool = False
) -> torch.Tensor:
    """XGrad-CAM: ``ReLU(sum_c (sum_ij A_c,ij / sum_ij A_c * dS/dA_c,ij) * A_c)``."""
    a, g = activations_and_grads(ctx, counterfactual=counterfactual)
    weights = (g * a / (a.sum((-2, -1), keepdim=True) + 1e-7)).sum((-2, -1), keepdim=True)
    return channel_maps(weights * a, eigen_smooth, counterfactual=counterfactual)


@register("layercam", uses_layer=True, paper="Jiang et al., LayerCAM, IEEE TIP 2021")
@aug_smoothable
def layercam(
    ctx: MapContext, *, eigen_smooth: bool = False, counterfactual: bool = False
) -> torch.Tensor:
    """LayerCAM: ``ReLU(sum_c ReLU(dS/dA_c) * A_c)``, weights per position."""
    a, g = activations_and_grads(ctx, counterfactual=counterfactual)
    return channel_maps(g.clamp(min=0) * a, eigen_smooth, counterfactual=counterfactual)


@register("hirescam", uses_layer=True, paper="Draelos & Carin, HiResCAM, arXiv 2011.08891")
@aug_smoothable
def hirescam(
    ctx: MapContext, *, eigen_smooth: bool = False, counterfactual: bool = False
) -> torch.Tensor:
    """HiResCAM: ``ReLU(sum_c dS/dA_c * A_c)``, element-wise product, no spatial averaging."""
    a, g = activations_and_grads(ctx, counterfactual=counterfactual)
    return channel_maps(g * a, eigen_smooth, counterfactual=counterfactual)


@register(
    "gradcam-elementwise", uses_layer=True,
    paper="pytorch-grad-cam's GradCAMElementWise (Gildenblat et al., 2021): HiResCAM with a "
    "ReLU per element",
)
@aug_smoothable
def gradcam_elementwise(
    ctx: MapContext, *, eigen_smooth: bool = False, counterfactual: bool = False
) -> torch.Tensor:
    """Grad-CAM element-wise: ``ReLU(sum_c ReLU(dS/dA_c * A_c))``, the positive part of each
    element's contribution before the channel sum."""
    a, g = activations_and_grads(ctx, counterfactual=counterfactual)
    return channel_maps((g * a).clamp(min=0), eigen_smooth, counterfactual=counterfactual)
