"""Smooth Grad-CAM++: Grad-CAM++ with its derivatives averaged over noisy copies of the image.

Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for
Deep Convolutional Neural Network Models", arXiv 1908.01224, 2019. The first, second and third
derivatives of the target score with respect to the target layer's activation are averaged
over ``n`` noisy copies ``x + N(0, sigma^2)`` (SmoothGrad), then used in Grad-CAM++'s
closed form with the activation of the clean image.
"""

from __future__ import annotations

import torch

from loupe._autograd import gradient_chunk_size, grads_per_target
from loupe.context import MapContext
from loupe.methods._perturb import check_positive_int, zero_padding
from loupe.methods.augment import aug_smoothable
from loupe.methods.gradients import noise_scales, standard_noise
from loupe.registry import register
from loupe.targets import Targets


def smooth_gradcam_plus_plus_weights(
    activation: torch.Tensor,
    d1: torch.Tensor,
    d2: torch.Tensor,
    d3: torch.Tensor,
    eps: float = 1e-8,
) -> torch.Tensor:
    """``(B, K, C)`` channel weights ``w_c = sum_ij alpha_ij ReLU(D1_ij)`` with
    ``alpha_ij = D2_ij / (2 D2_ij + sum_ab(A_ab) D3_ij + eps)``.

    Args:
        activation: ``(B, C, h, w)`` clean activation ``A``.
        d1, d2, d3: ``(B, K, C, h, w)`` means over the noisy copies of ``g``, ``g^2`` and
            ``g^3``, ``g = dS_k/dA`` (the exponential-score closed form of Grad-CAM++, in
            which ``exp(S)`` cancels; the paper writes them ``D^1, D^2, D^3``).
        eps: added to the denominator (torchcam's 1e-8).
    """
    total = activation.sum((-2, -1))[:, None, :, None, None]  # (B, 1, C, 1, 1)
    alpha = d2 / (2 * d2 + total * d3 + eps)
    return (alpha * d1.clamp(min=0)).sum((-2, -1))


def noisy_layer_derivatives(
    ctx: MapContext, noise: torch.Tensor, sigma: torch.Tensor, targets: Targets,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, K, C, h, w)`` means of ``g``, ``g^2``, ``g^3`` over the noisy copies
    ``x_b + sigma_b z_s`` (``noise`` ``(N, C, H, W)`` holds the ``z_s``), ``g`` the gradient
    of each target score with respect to the target layer's activation.

    Copies of any images go through the model ``chunk_size`` at a time (rows
    ``image * N + sample``); each chunk is one forward and one batched backward for all K
    targets, from the output to the layer only."""
    images, n = ctx.images, noise.shape[0]
    sums: list[torch.Tensor] = []
    for rows in torch.arange(images.shape[0] * n, device=images.device).split(chunk_size):
        image_of_row, sample = rows // n, rows % n
        noisy = torch.addcmul(images[image_of_row], sigma[image_of_row, None, None, None],
                              noise[sample])
        with torch.enable_grad():
            output = ctx.model(noisy)
            scores = targets.of_rows(image_of_row).scores(output)
            grads = grads_per_target(scores, ctx.captured[ctx.layer])  # (K, R, ...)
        k = grads.shape[0]
        grid = ctx.reshape(grads.flatten(0, 1)).float()
        grid = grid.unflatten(0, (k, rows.numel())).transpose(0, 1)  # (R, K, C, h, w)
        powers = (grid, grid.pow(2), grid.pow(3))
        if not sums:
            sums = [images.new_zeros((images.shape[0], *grid.shape[1:]), dtype=torch.float32)
                    for _ in powers]
        for total, power in zip(sums, powers, strict=True):
            total.index_add_(0, image_of_row, power)
    d1, d2, d3 = (total / n for total in sums)
    return d1, d2, d3


@register(
    "smoothgradcam++", uses_layer=True, stochastic=True,
    paper="Omeiza et al., Smooth Grad-CAM++, arXiv 1908.01224, 2019",
)
@aug_smoothable
def smooth_gradcam_plus_plus(
    ctx: MapContext,
    *,
    n_samples: int = 4,
    stdev: float | None = 0.3,
    noise_level: float = 0.15,
    chunk_size: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Smooth Grad-CAM++: ``L_k = ReLU(sum_c (sum_ij alpha_ij ReLU(D1_ij)) A_c)``,
    ``alpha = D2 / (2 D2 + sum_ab(A_ab) D3)``, ``Dp = 1/n sum_s (dS_k/dA at x + N(0,
    sigma^2))^p`` (Omeiza et al. 2019; Grad-CAM++'s alpha with SmoothGrad's averaging).

    ``A`` is the clean image's activation. The numerator of alpha is ``D2`` (Grad-CAM++'s
    closed form; the paper prints ``D1``, which torchcam also corrects). Tested against
    torchcam's ``SmoothGradCAMpp`` given the same noise, where torchcam follows the same
    formula (see tests/methods/test_scorecam_variants.py); elsewhere torchcam differs in three
    ways: ``sum_ab(A_ab D3_ab)`` in the denominator, the last noisy copy's gradient instead of
    ``D1`` and the last noisy copy's activation instead of the clean one in the map. At a
    layer followed only by global average pooling and a linear head (ResNet's ``layer4``) the
    gradients do not depend on the input, so the noise changes nothing and the maps are
    Grad-CAM++'s; the smoothing acts at inner layers.

    Options: ``n_samples`` (n, 4) and ``stdev`` (0.3), torchcam's defaults, or ``stdev=None``
    and ``noise_level`` (``sigma = noise_level * (max(x) - min(x))`` per image, as
    SmoothGrad); ``chunk_size`` (noisy copies per forward + backward; None:
    :func:`loupe._autograd.gradient_chunk_size`, 16 for small inputs on the CPU); ``seed`` (0)
    or a ``generator``. One noise draw ``(n, C, H, W)`` is shared by all images (see
    :func:`loupe.methods.gradients.standard_noise`), so the same seed gives the same maps on
    any batch and chunk size. Returns ``(B, K, h, w)`` at the layer's resolution. Cost: one
    forward of the images, then ``ceil(B n / chunk_size)`` forwards and batched backwards.
    """
    check_positive_int("n_samples", n_samples)
    images = ctx.images
    if chunk_size is None:
        chunk_size = gradient_chunk_size(images.device, images[0].numel(), ctx.targets.count)
    check_positive_int("chunk_size", chunk_size)
    sigma = noise_scales(images, noise_level, stdev)
    noise = standard_noise(n_samples, images.shape[1:], seed=seed, generator=generator,
                           device=images.device, dtype=images.dtype)
    with torch.no_grad():
        targets = ctx.targets.bind(ctx.model(images))
        activation = ctx.activation().float()
    d1, d2, d3 = noisy_layer_derivatives(ctx, noise, sigma, targets, chunk_size)
    weights = smooth_gradcam_plus_plus_weights(activation, d1, d2, d3)
    maps = torch.einsum("bkc,bchw->bkhw", weights, activation).clamp(min=0)
    return zero_padding(maps, targets)
