"""KPCA-CAM: EigenCAM with kernel PCA (pytorch-grad-cam's ``KPCA_CAM``).

Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models using Kernel
PCA", arXiv 2410.00267, 2024. The ``h*w`` positions of a layer's activation, centred over
positions, are mapped through a kernel; the map is each position's coordinate on the first
kernel principal component, as scikit-learn's ``KernelPCA(n_components=1)`` computes it.
"""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.methods.augment import aug_smoothable
from loupe.methods.eigen import zero_padding
from loupe.methods.projection import positive_peak
from loupe.registry import register

KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def kernel_matrix(points: torch.Tensor, kernel: str, gamma: float | None) -> torch.Tensor:
    """``(N, P, C)`` points -> ``(N, P, P)`` kernel matrices with scikit-learn's defaults
    (``gamma = 1 / C`` when None, ``coef0 = 1``, ``degree = 3``): sigmoid
    ``tanh(gamma <x, y> + 1)``, rbf ``exp(-gamma |x - y|^2)``, poly ``(gamma <x, y> + 1)^3``,
    linear ``<x, y>``, cosine ``<x, y> / (|x| |y|)``."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    if gamma is None:
        gamma = 1.0 / points.shape[-1]
    elif isinstance(gamma, bool) or not isinstance(gamma, int | float) or not gamma > 0:
        raise ValueError(f"gamma must be a positive number (or None), got {gamma!r}")
    if kernel == "cosine":
        norms = points.norm(dim=-1, keepdim=True)
        points = points / torch.where(norms == 0, 1.0, norms)
    dots = points @ points.transpose(1, 2)
    if kernel in ("linear", "cosine"):
        return dots
    if kernel == "sigmoid":
        return torch.tanh(gamma * dots + 1)
    if kernel == "poly":
        return (gamma * dots + 1) ** 3
    squared = points.pow(2).sum(-1)
    distances = (squared[:, :, None] + squared[:, None, :] - 2 * dots).clamp(min=0)
    return torch.exp(-gamma * distances)


def kernel_first_component(activations: torch.Tensor, kernel: str = "sigmoid",
                           gamma: float | None = None) -> torch.Tensor:
    """``(..., C, h, w)`` -> ``(..., h, w)``: ``sqrt(lambda_1) alpha_1``, the top eigenpair of
    the double-centred kernel matrix ``K_c = K - 1K - K1 + 1K1`` of the centred positions
    (scikit-learn's ``KernelPCA.fit_transform``: negative eigenvalues count as 0, the sign puts
    the entry of largest magnitude positive). Computed in float64; float32 result."""
    *lead, c, h, w = activations.shape
    points = torch.nan_to_num(activations.reshape(-1, c, h * w).transpose(1, 2).double())
    points = points - points.mean(1, keepdim=True)
    matrix = kernel_matrix(points, kernel, gamma)
    matrix = (matrix - matrix.mean(1, keepdim=True) - matrix.mean(2, keepdim=True)
              + matrix.mean((1, 2), keepdim=True))
    values, vectors = torch.linalg.eigh(matrix)
    projection = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()
    return positive_peak(projection).float().reshape(*lead, h, w)


@register("kpcacam", uses_layer=True, gradients=False,
          paper="Karmani et al., KPCA-CAM: Visual Explainability of Deep Computer Vision "
          "Models using Kernel PCA, arXiv 2410.00267, 2024")
@aug_smoothable
def kpcacam(ctx: MapContext, *, kernel: str = "sigmoid",
            gamma: float | None = None) -> torch.Tensor:
    """KPCA-CAM: ``ReLU(sqrt(lambda_1) alpha_1)``, the first kernel principal component of
    the centred ``(h*w, C)`` activations (:func:`kernel_first_component`); ``kernel`` one of
    sigmoid (default), rbf, poly, linear, cosine, ``gamma`` (None: ``1 / C``). With the linear
    kernel it is EigenCAM. Class-agnostic like EigenCAM (the K maps of an image are equal).
    One forward and one ``(h*w, h*w)`` eigendecomposition per image. ``(B, K, h, w)``."""
    output = ctx.inference_output()
    with torch.no_grad():
        targets = ctx.targets.bind(output)
        maps = kernel_first_component(ctx.activation().float(), kernel, gamma).clamp(min=0)
    return zero_padding(maps[:, None].expand(-1, targets.count, -1, -1), targets)
