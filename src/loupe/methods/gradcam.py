"""The gradient-weighted CAM family. Each method only says how to weight the activations;
maps are ``ReLU(sum_c weights_c * A_c)`` at the target layer's resolution."""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.methods._layer_grads import activations_and_grads
from loupe.registry import register


def _relu_sum(weighted: torch.Tensor) -> torch.Tensor:
    """``(B, K, C, h, w)`` weighted activations -> ``(B, K, h, w)`` maps."""
    return weighted.sum(2).clamp(min=0)


@register("gradcam", uses_layer=True, paper="Selvaraju et al., Grad-CAM, ICCV 2017")
def gradcam(ctx: MapContext) -> torch.Tensor:
    """Grad-CAM: ``ReLU(sum_c mean_ij(dS/dA_c) * A_c)``."""
    a, g = activations_and_grads(ctx)
    return _relu_sum(g.mean((-2, -1), keepdim=True) * a)


def gradcam_plus_plus_weights(a: torch.Tensor, g: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Grad-CAM++ channel weights ``sum_ij alpha_ij ReLU(g_ij)`` with
    ``alpha = g^2 / (2 g^2 + sum_ij(A) g^3)`` (the exponential-score closed form)."""
    g2 = g.pow(2)
    alpha = g2 / (2 * g2 + a.sum((-2, -1), keepdim=True) * g2 * g + eps)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return (alpha * g.clamp(min=0)).sum((-2, -1), keepdim=True)


@register("gradcam++", uses_layer=True, paper="Chattopadhay et al., Grad-CAM++, WACV 2018")
def gradcam_plus_plus(ctx: MapContext) -> torch.Tensor:
    """Grad-CAM++: ``ReLU(sum_c (sum_ij alpha^c_ij ReLU(dS/dA_c,ij)) * A_c)``."""
    a, g = activations_and_grads(ctx)
    return _relu_sum(gradcam_plus_plus_weights(a, g) * a)


@register("xgradcam", uses_layer=True, paper="Fu et al., Axiom-based Grad-CAM, BMVC 2020")
def xgradcam(ctx: MapContext) -> torch.Tensor:
    """XGrad-CAM: ``ReLU(sum_c (sum_ij A_c,ij / sum_ij A_c * dS/dA_c,ij) * A_c)``."""
    a, g = activations_and_grads(ctx)
    weights = (g * a / (a.sum((-2, -1), keepdim=True) + 1e-7)).sum((-2, -1), keepdim=True)
    return _relu_sum(weights * a)


@register("layercam", uses_layer=True, paper="Jiang et al., LayerCAM, IEEE TIP 2021")
def layercam(ctx: MapContext) -> torch.Tensor:
    """LayerCAM: ``ReLU(sum_c ReLU(dS/dA_c) * A_c)``, weights per position."""
    a, g = activations_and_grads(ctx)
    return _relu_sum(g.clamp(min=0) * a)


@register("hirescam", uses_layer=True, paper="Draelos & Carin, HiResCAM, arXiv 2011.08891")
def hirescam(ctx: MapContext) -> torch.Tensor:
    """HiResCAM: ``ReLU(sum_c dS/dA_c * A_c)``, element-wise product, no spatial averaging."""
    a, g = activations_and_grads(ctx)
    return _relu_sum(g * a)
