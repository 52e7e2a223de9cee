"""EigenCAM and EigenGradCAM: the first principal component of a layer's activations.

Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020.
EigenCAM needs no gradient and no class: every target of an image gets the same map.
"""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.methods._layer_grads import activations_and_grads
from loupe.methods.augment import aug_smoothable
from loupe.methods.projection import first_component
from loupe.registry import register
from loupe.targets import Targets


def zero_padding(maps: torch.Tensor, targets: Targets) -> torch.Tensor:
    """``(B, K, h, w)`` maps with the maps of padding targets (-1) set to zero."""
    if targets.valid is None:
        return maps
    return maps * targets.valid.to(maps.device)[..., None, None].to(maps.dtype)


@register("eigencam", uses_layer=True, gradients=False,
          paper="Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal "
          "Components, IJCNN 2020")
@aug_smoothable
def eigencam(ctx: MapContext) -> torch.Tensor:
    """EigenCAM: ``ReLU(X_c v_1)``, the activations' coordinates on their first principal
    axis (``X_c``: the ``(h*w, C)`` activations centred over positions; sign as
    :func:`loupe.methods.projection.first_component`). Class-agnostic: the K maps of an image
    are equal (padding targets zero). One forward, no backward. ``(B, K, h, w)``."""
    output = ctx.inference_output()
    with torch.no_grad():
        targets = ctx.targets.bind(output)
        maps = first_component(ctx.activation().float()).clamp(min=0)
    return zero_padding(maps[:, None].expand(-1, targets.count, -1, -1), targets)


@register("eigengradcam", uses_layer=True,
          paper="pytorch-grad-cam's EigenGradCAM: Eigen-CAM (Muhammad & Yeasin, IJCNN 2020) "
          "of activations x gradients")
@aug_smoothable
def eigengradcam(ctx: MapContext) -> torch.Tensor:
    """EigenGradCAM: ``ReLU(first_component(dS/dA * A))``, the first principal component of
    the element-wise product of gradients and activations, per target. The component's sign
    is fixed by its peak, so the map does not change with the sign of the score (no
    ``counterfactual`` option). ``(B, K, h, w)``."""
    a, g = activations_and_grads(ctx)
    return first_component(g * a).clamp(min=0)
