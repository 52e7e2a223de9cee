"""FullGrad: input-gradients plus the bias-gradients of every convolution and batch norm.

Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization",
NeurIPS 2019: ``S(x) = psi(dS/dx * x) + sum_l sum_c psi(b_c * dS/dz_c)``, with ``z`` the output
of a layer with bias ``b`` and ``psi`` the absolute value, min-max scaled and bilinearly
resized to the input. The bias of an eval-mode batch norm is ``beta - gamma mu / sqrt(var +
eps)``. Computed as pytorch-grad-cam's ``FullGrad``: each colour channel of ``|x dS/dx|`` and
each channel of each layer's ``|b_c dS/dz_c|`` is min-max scaled on its own, then resized and
summed (the authors' code scales a whole layer at once).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loupe.context import MapContext
from loupe.hooks import hooked
from loupe.methods.augment import aug_smoothable, minmax
from loupe.registry import register


def bias_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name -> ``(C,)`` bias of every ``Conv2d`` with a bias and every ``BatchNorm2d`` with
    running statistics (its eval-mode bias ``beta - gamma mu / sqrt(var + eps)``), in module
    order. These are the layers whose bias-gradients FullGrad sums."""
    biases = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            biases[name] = module.bias.detach()
        elif isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
            scale = torch.rsqrt(module.running_var + module.eps)
            if module.weight is not None:
                scale = scale * module.weight.detach()
            shift = -module.running_mean * scale
            biases[name] = shift if module.bias is None else shift + module.bias.detach()
    return biases


def grads_of_targets(scores: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``d scores[:, k] / d inputs[i]`` for every target k, as ``(K, *inputs[i].shape)`` per
    input (zeros for an input the scores do not depend on); the K backward passes run as one
    batched backward where the model allows it."""
    k = scores.shape[1]
    basis = torch.eye(k, dtype=scores.dtype, device=scores.device)[:, None, :]
    try:
        if k == 1:
            grads = torch.autograd.grad(scores[:, 0].sum(), inputs, allow_unused=True)
            grads = tuple(None if g is None else g[None] for g in grads)
        else:  # keeps the graph: the fallback below needs it if vmap fails midway
            grads = torch.autograd.grad(scores, inputs, basis.expand(k, *scores.shape),
                                        is_grads_batched=True, retain_graph=True,
                                        allow_unused=True)
    except RuntimeError:
        if k == 1:
            raise
        columns = [torch.autograd.grad(scores[:, j].sum(), inputs, retain_graph=j < k - 1,
                                       allow_unused=True) for j in range(k)]
        grads = tuple(
            None if column[0] is None else torch.stack(column)
            for column in zip(*columns, strict=True)
        )
    return [torch.zeros(k, *x.shape, dtype=x.dtype, device=x.device) if g is None else g
            for g, x in zip(grads, inputs, strict=True)]


def scaled_sum(terms: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(K, B, C, h, w)`` non-negative terms -> ``(B, K, H, W)``: each ``(h, w)`` map min-max
    scaled, summed over ``C`` and resized bilinearly to ``size`` (resizing is linear, so the
    sum of resized maps is the resized sum)."""
    summed = minmax(terms).sum(2).transpose(0, 1)
    if summed.shape[-2:] == size:
        return summed
    return F.interpolate(summed, size=size, mode="bilinear", align_corners=False)


def full_gradients(ctx: MapContext) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]],
                                             torch.Tensor]:
    """The pieces of FullGrad's decomposition of the target scores, before any ``psi``:

    ``(K, B, C, H, W)`` input-gradients ``dS/dx``; per call of a :func:`bias_layers` layer
    whose output is ``(B, C, h, w)``, its bias ``(C,)`` and ``dS/dz`` ``(K, B, C, h, w)``;
    and the bound targets' validity ``(B, K)`` (None for score functions). For a network that
    is piecewise linear in its input, ``S = <dS/dx, x> + sum_l sum_c b_c sum_ij dS/dz_cij``
    plus the biases of the layers not counted here (the paper's completeness).

    One forward and one batched backward to the input and to every such layer's output: the
    gradients are read at zero probes that hooks add to the outputs, so in-place ops after a
    layer (``ReLU(inplace=True)``, ``out += identity``) do not change them."""
    biases = bias_layers(ctx.model)
    probes: dict[str, list[torch.Tensor]] = {name: [] for name in biases}

    def probe(name: str):
        def add(output: torch.Tensor) -> torch.Tensor:
            if output.dim() != 4:
                return output
            probes[name].append(torch.zeros_like(output, requires_grad=True))
            return output + probes[name][-1]

        return add

    images = ctx.images.detach().requires_grad_(True)
    with hooked(ctx.model, leaf=False, edit={name: probe(name) for name in biases}):
        output = ctx.model(images)
    targets = ctx.targets.bind(output)
    found = [(biases[name], p) for name in biases for p in probes[name]]
    grads = grads_of_targets(targets.scores(output), [images, *(p for _, p in found)])
    layers = [(bias, grad) for (bias, _), grad in zip(found, grads[1:], strict=True)]
    return grads[0], layers, targets.valid


@register("fullgrad", uses_layer=False,
          paper="Srinivas & Fleuret, Full-Gradient Representation for Neural Network "
          "Visualization, NeurIPS 2019")
@aug_smoothable
def fullgrad(ctx: MapContext) -> torch.Tensor:
    """FullGrad: ``sum_colour psi(|x dS/dx|) + sum_l sum_c psi(|b_c dS/dz_c|)`` over every
    convolution with a bias and every batch norm (:func:`bias_layers`), ``psi`` the per-map
    min-max scaling and bilinear resize to the input; no final scaling (``explain`` returns
    raw maps). Layers with an output other than ``(B, C, h, w)`` are skipped. One forward and
    one batched backward (:func:`full_gradients`). ``(B, K, H, W)``."""
    input_grads, layers, valid = full_gradients(ctx)
    images = ctx.images.detach()
    size = tuple(images.shape[-2:])
    maps = scaled_sum((input_grads * images).abs().float(), size)
    for bias, grad in layers:
        maps = maps + scaled_sum((bias[:, None, None] * grad).abs().float(), size)
    if valid is not None:
        maps = maps * valid[..., None, None].to(maps.dtype)
    return maps
