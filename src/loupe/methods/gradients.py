"""Gradient attributions on the input pixels: saliency, gradient x input, SmoothGrad and
Integrated Gradients.

Every method differentiates the K target scores of each image with respect to the image
(one forward of a batch of copies, one batched backward for all K targets, see
:func:`loupe._autograd.grads_per_target`) and reduces the colour channels of the result, so
maps are ``(B, K, H, W)`` at the input's resolution, on the input's device. The functional
core (``*_maps`` functions) takes a model, images ``(B, C, H, W)`` and :class:`Targets`; the
registered functions only read options and call it.

Copies of the images (noisy samples, points on the integration path) are laid out as rows
``r = image * n + copy`` and go through the model ``chunk_size`` rows at a time, whatever
image they belong to; results are accumulated per image in copy order, so maps do not depend
on the batch size or the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real

import numpy as np
import torch

from loupe._autograd import gradient_chunk_size, grads_per_target
from loupe.context import MapContext
from loupe.methods._perturb import seeded_generator
from loupe.methods._scores import check_score, check_smooth, class_scores, smooth_maps
from loupe.registry import register
from loupe.targets import Targets, output_tensor

#: A model, or the forward that stands in for it (:meth:`MapContext.gradient_forward`)
Forward = Callable[[torch.Tensor], object]

REDUCTIONS = ("abs-max", "abs-sum", "l2", "sum")
RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def reduce_channels(attributions: torch.Tensor, reduce: str) -> torch.Tensor:
    """Per-pixel maps ``(..., H, W)`` from channel attributions ``(..., C, H, W)``.

    ``"abs-max"``: ``max_c |a_c|`` (Simonyan et al.); ``"abs-sum"``: ``sum_c |a_c|``;
    ``"l2"``: ``sqrt(sum_c a_c^2)``; ``"sum"``: ``sum_c a_c`` (signed).
    """
    _check_reduce(reduce)
    if reduce == "abs-max":
        return attributions.abs().amax(-3)
    if reduce == "abs-sum":
        return attributions.abs().sum(-3)
    if reduce == "l2":
        return attributions.pow(2).sum(-3).sqrt()
    return attributions.sum(-3)


def _check_reduce(reduce: object) -> None:
    if not isinstance(reduce, str) or reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")


def input_gradients(
    model: Forward, inputs: torch.Tensor, targets: Targets, score: str = "logit"
) -> torch.Tensor:
    """``d S_k / d x`` of every target k for ``inputs`` ``(R, C, H, W)``, as ``(K, R, C, H, W)``.

    One forward, one batched backward. ``targets`` are bound on this forward's output (top-1
    classes come from it, given classes are range-checked). ``score`` transforms the logits
    first (``"logit"``, ``"log-softmax"``, ``"logit-minus-mean"``: see
    :mod:`loupe.methods._scores`). ``inputs`` is not modified.
    """
    return input_gradients_and_output(model, inputs, targets, score)[0]


def input_gradients_and_output(
    model: Forward, inputs: torch.Tensor, targets: Targets, score: str = "logit"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`input_gradients` and the logits ``(R, N)`` of its forward, detached (shuffle
    saliency's round weights come from them; :func:`loupe.targets.output_tensor` of any model
    output); None for score-function targets, whose output may hold no logits."""
    check_score(score)
    if score != "logit" and targets.functions is not None:
        raise ValueError(f"score={score!r} needs class targets; score functions get the raw output")
    with torch.enable_grad():
        leaf = inputs.detach().requires_grad_(True)
        output = model(leaf)
        bound = targets.bind(output)
        if targets.functions is not None:
            return grads_per_target(bound.scores(output), leaf).detach(), None
        logits = output_tensor(output)
        grads = grads_per_target(bound.scores(class_scores(logits, score)), leaf).detach()
    return grads, logits.detach()


def _check_count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _chunks(total: int, chunk_size: int, device: torch.device) -> list[torch.Tensor]:
    rows = torch.arange(total, device=device)
    return list(rows.split(chunk_size))


# --- saliency and gradient x input ---------------------------------------------------------


def saliency_maps(
    model: Forward, images: torch.Tensor, targets: Targets, reduce: str = "abs-max",
    score: str = "logit",
) -> torch.Tensor:
    """Saliency maps ``(B, K, H, W)``: ``reduce_c(dS_k/dx_c)``, by default ``max_c |dS_k/dx_c|``,
    of the ``score`` (see :func:`input_gradients`)."""
    _check_reduce(reduce)
    grads = input_gradients(model, images, targets, score)
    return reduce_channels(grads, reduce).transpose(0, 1)


def gradient_x_input_maps(
    model: Forward, images: torch.Tensor, targets: Targets, reduce: str = "sum"
) -> torch.Tensor:
    """Gradient x input maps ``(B, K, H, W)``: ``reduce_c(x_c * dS_k/dx_c)``, by default the
    signed sum over channels."""
    _check_reduce(reduce)
    grads = input_gradients(model, images, targets)
    return reduce_channels(grads * images[None], reduce).transpose(0, 1)


@register(
    "saliency", uses_layer=False,
    paper="Simonyan et al., Deep Inside Convolutional Networks, ICLR Workshop 2014",
)
def saliency(
    ctx: MapContext, *, reduce: str = "abs-max", score: str = "logit", smooth: float = 0.0
) -> torch.Tensor:
    """Gradient saliency: ``M_k = max_c |dS_k / dx_c|`` (Simonyan et al. 2014).

    Options: ``reduce`` (``"abs-max"`` as in the paper, ``"abs-sum"``, ``"l2"``, ``"sum"``);
    ``score`` (``"logit"``, ``"log-softmax"``, ``"logit-minus-mean"``: what ``S_k`` is, see
    :mod:`loupe.methods._scores`); ``smooth`` (Gaussian blur, sigma as a fraction of the
    input's shorter side; 0 = off). Returns ``(B, K, H, W)``.
    """
    smooth = check_smooth(smooth)
    maps = saliency_maps(ctx.gradient_forward(), ctx.images, ctx.targets, reduce, score)
    return smooth_maps(maps, smooth)


@register(
    "gradxinput", uses_layer=False,
    paper="Shrikumar et al., Not Just a Black Box, arXiv 1605.01713, 2016",
)
def gradxinput(ctx: MapContext, *, reduce: str = "sum") -> torch.Tensor:
    """Gradient x input: ``M_k = sum_c x_c * dS_k / dx_c`` (Shrikumar et al. 2016).

    Options: ``reduce`` (``"sum"`` by default; ``"abs-max"``, ``"abs-sum"``, ``"l2"``).
    Returns ``(B, K, H, W)``.
    """
    return gradient_x_input_maps(ctx.gradient_forward(), ctx.images, ctx.targets, reduce)


# --- SmoothGrad ------------------------------------------------------------------------------


def standard_noise(
    n_samples: int,
    image_shape: tuple[int, ...] | torch.Size,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One standard normal draw ``(n_samples, C, H, W)``, shared by every image of a batch,
    returned on ``device``.

    Drawn with ``generator`` if given (on its device), else with a CPU generator seeded with
    ``seed``: ``torch.randn((n, C, H, W), generator=torch.Generator().manual_seed(seed))``, so
    a seed gives the same noise on every device. Sharing one draw (common random numbers)
    makes an image's map independent of the other images in its batch.
    """
    shape = (n_samples, *tuple(image_shape))
    generator = seeded_generator(seed, generator)
    noise = torch.randn(shape, generator=generator, device=generator.device)
    return noise.to(device=device, dtype=dtype)


def noise_scales(
    images: torch.Tensor, noise_level: float = 0.15, stdev: float | None = None
) -> torch.Tensor:
    """``(B,)`` noise standard deviations: ``stdev`` for every image if given, otherwise
    ``noise_level * (max(x) - min(x))`` of each image, as in the SmoothGrad paper."""
    if stdev is not None:
        if not isinstance(stdev, Real) or not math.isfinite(stdev) or stdev < 0:
            raise ValueError(f"stdev must be a finite number >= 0, got {stdev!r}")
        return images.new_full((images.shape[0],), float(stdev))
    if not isinstance(noise_level, Real) or not math.isfinite(noise_level) or noise_level < 0:
        raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
    flat = images.flatten(1)
    return noise_level * (flat.amax(1) - flat.amin(1))


def smoothgrad_maps(
    model: Forward,
    images: torch.Tensor,
    targets: Targets,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    *,
    reduce: str = "abs-max",
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    score: str = "logit",
) -> torch.Tensor:
    """SmoothGrad maps ``(B, K, H, W)``: ``1/N sum_s reduce_c(dS_k/dx_c at x + sigma_b z_s)``.

    Args:
        images: ``(B, C, H, W)``.
        targets: bound or unbound targets of the B images (top-1 is taken on the clean images).
        noise: ``(N, C, H, W)`` standard normal samples ``z_s``, the same for every image.
        sigma: ``(B,)`` noise standard deviation of each image.
        reduce: channel reduction of each sample's gradient (see :func:`reduce_channels`).
        chunk_size: noisy copies (of any images) per forward; None:
            :func:`loupe._autograd.gradient_chunk_size` (off CUDA 16 for small inputs, fewer
            for large ones; from free memory on CUDA).
        progress: called after each chunk with (noisy copies done, ``B * N``).
        score: what ``S_k`` is (see :func:`input_gradients`).
    """
    _check_reduce(reduce)
    check_score(score)
    if chunk_size is None:
        chunk_size = gradient_chunk_size(images.device, images[0].numel(), targets.count)
    _check_count("chunk_size", chunk_size)
    n = noise.shape[0]
    if noise.shape[1:] != images.shape[1:] or sigma.shape != images.shape[:1]:
        raise ValueError(
            f"noise {tuple(noise.shape)} and sigma {tuple(sigma.shape)} do not fit images "
            f"{tuple(images.shape)}"
        )
    targets = targets.ensure_bound(model, images)
    total = images.new_zeros((images.shape[0], targets.count, *images.shape[2:]))
    for chunk, rows in enumerate(_chunks(images.shape[0] * n, chunk_size, images.device)):
        image_of_row, sample = rows // n, rows % n
        noisy = torch.addcmul(images[image_of_row], sigma[image_of_row, None, None, None],
                              noise[sample])
        grads = input_gradients(model, noisy, targets.of_rows(image_of_row), score)
        total.index_add_(0, image_of_row, reduce_channels(grads, reduce).transpose(0, 1))
        if progress is not None:
            progress(min((chunk + 1) * chunk_size, images.shape[0] * n), images.shape[0] * n)
    return total / n


@register(
    "smoothgrad", uses_layer=False, stochastic=True,
    paper="Smilkov et al., SmoothGrad: removing noise by adding noise, arXiv 1706.03825, 2017",
)
def smoothgrad(
    ctx: MapContext,
    *,
    n_samples: int = 32,
    noise_level: float = 0.15,
    stdev: float | None = None,
    reduce: str = "abs-max",
    chunk_size: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    score: str = "logit",
    smooth: float = 0.0,
) -> torch.Tensor:
    """SmoothGrad: ``M_k(x) = 1/n sum_s M'_k(x + N(0, sigma^2))`` with ``M'`` the saliency map
    (Smilkov et al. 2017).

    Options: ``n_samples`` (n, 32); ``noise_level`` (0.15: ``sigma = noise_level * (max(x) -
    min(x))`` per image, the paper's parametrisation) or an absolute ``stdev``; ``reduce`` of
    each sample's gradient (``"abs-max"``, see :func:`saliency`); ``chunk_size`` (noisy
    copies per forward; None: :func:`loupe._autograd.gradient_chunk_size`, off CUDA 16 for
    small inputs and fewer for large ones, from free memory on CUDA); ``seed`` (0) or a
    ``generator`` (used instead of the seed). One noise tensor ``(n, C, H, W)`` is drawn (on
    the CPU for a seed, see :func:`standard_noise`) and shared by all images, so the same seed
    gives the same maps for any batch size, chunk size and device. ``score`` and ``smooth``
    as for :func:`saliency`. Returns ``(B, K, H, W)``.
    """
    _check_count("n_samples", n_samples)
    smooth = check_smooth(smooth)
    images = ctx.images
    sigma = noise_scales(images, noise_level, stdev)
    noise = standard_noise(
        n_samples, images.shape[1:], seed=seed, generator=generator,
        device=images.device, dtype=images.dtype,
    )
    maps = smoothgrad_maps(
        ctx.gradient_forward(), images, ctx.targets, noise, sigma, reduce=reduce,
        chunk_size=chunk_size, progress=ctx.report_rows, score=score,
    )
    return smooth_maps(maps, smooth)


# --- Integrated Gradients --------------------------------------------------------------------


def quadrature(
    rule: str, steps: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``alpha`` in [0, 1] and weights ``w``, both ``(steps,)``, of the rule
    ``int_0^1 f(a) da ~ sum_i w_i f(alpha_i)``.

    ``gausslegendre``: Gauss-Legendre nodes mapped to [0, 1] (exact for polynomials of degree
    ``2 steps - 1``); ``riemann_left/right/middle``: ``alpha = (i + 0/1/0.5) / steps``,
    ``w = 1 / steps``; ``riemann_trapezoid``: ``alpha = i / (steps - 1)``, ``w = 1 / (steps -
    1)`` halved at both ends (weights sum to 1; captum's ``riemann_trapezoid`` uses ``1 /
    steps``, whose weights sum to ``(steps - 1) / steps``).
    """
    _check_count("steps", steps, 2 if rule == "riemann_trapezoid" else 1)
    i = torch.arange(steps, dtype=torch.float64)
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas = 0.5 * (1 + torch.from_numpy(nodes))
        step_weights = 0.5 * torch.from_numpy(weights)
    elif rule == "riemann_trapezoid":
        alphas = i / (steps - 1)
        step_weights = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)
        step_weights[[0, -1]] /= 2
    elif rule in ("riemann_left", "riemann_right", "riemann_middle"):
        shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
        alphas = (i + shift) / steps
        step_weights = torch.full((steps,), 1 / steps, dtype=torch.float64)
    else:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    return alphas.to(device=device, dtype=dtype), step_weights.to(device=device, dtype=dtype)


def baselines_for(images: torch.Tensor, baseline: object = None) -> torch.Tensor:
    """The baseline of each image, ``(B, C, H, W)``.

    ``None`` or ``0``: black (zeros); a number: that constant; ``"mean"``: each image's mean
    colour (per channel); a tensor broadcastable to ``images`` (``(C, 1, 1)``, ``(C, H, W)``,
    ``(B, C, H, W)``).
    """
    if baseline is None:
        return torch.zeros_like(images)
    if isinstance(baseline, str):
        if baseline == "mean":
            return images.mean((2, 3), keepdim=True).expand_as(images)
        raise ValueError(f"baseline must be 'mean', a number or a tensor; got {baseline!r}")
    if isinstance(baseline, Real) and not isinstance(baseline, bool):
        return torch.full_like(images, float(baseline))
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.detach().to(device=images.device, dtype=images.dtype).expand_as(images)
        except RuntimeError:
            raise ValueError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to the images' "
                f"shape {tuple(images.shape)}"
            ) from None
    raise ValueError(
        f"baseline must be 'mean', a number or a tensor; got {type(baseline).__name__}"
    )


def integrated_gradients_maps(
    model: Forward,
    images: torch.Tensor,
    targets: Targets,
    baselines: torch.Tensor,
    alphas: torch.Tensor,
    weights: torch.Tensor,
    *,
    reduce: str = "sum",
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Integrated Gradients maps ``(B, K, H, W)``:
    ``reduce_c((x - x')_c * sum_i w_i dS_k/dx_c at x' + alpha_i (x - x'))``.

    Args:
        images, baselines: ``(B, C, H, W)`` inputs ``x`` and baselines ``x'``.
        alphas, weights: ``(S,)`` quadrature nodes and weights (see :func:`quadrature`).
        reduce: channel reduction of the attributions; ``"sum"`` keeps completeness
            (each map sums to about ``S_k(x) - S_k(x')``).
        chunk_size: path points (of any images) per forward; None:
            :func:`loupe._autograd.gradient_chunk_size` (off CUDA 16 for small inputs, fewer
            for large ones; from free memory on CUDA).
        progress: called after each chunk with (path points done, ``B * S``).
    """
    _check_reduce(reduce)
    if chunk_size is None:
        chunk_size = gradient_chunk_size(images.device, images[0].numel(), targets.count)
    _check_count("chunk_size", chunk_size)
    steps = alphas.shape[0]
    targets = targets.ensure_bound(model, images)
    delta = images - baselines
    total = images.new_zeros((images.shape[0], targets.count, *images.shape[1:]))
    rows_total = images.shape[0] * steps
    for chunk, rows in enumerate(_chunks(rows_total, chunk_size, images.device)):
        image_of_row, step = rows // steps, rows % steps
        path = torch.addcmul(baselines[image_of_row], alphas[step, None, None, None],
                             delta[image_of_row])
        grads = input_gradients(model, path, targets.of_rows(image_of_row))
        weighted = grads * weights[step, None, None, None]
        total.index_add_(0, image_of_row, weighted.transpose(0, 1))
        if progress is not None:
            progress(min((chunk + 1) * chunk_size, rows_total), rows_total)
    return reduce_channels(total * delta[:, None], reduce)


@register(
    "integrated-gradients", uses_layer=False,
    paper="Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017",
)
def integrated_gradients(
    ctx: MapContext,
    *,
    baseline: object = None,
    steps: int = 32,
    rule: str = "gausslegendre",
    reduce: str = "sum",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Integrated Gradients: ``IG_c(x) = (x_c - x'_c) int_0^1 dS/dx_c(x' + a (x - x')) da``,
    summed over channels (Sundararajan et al. 2017).

    Options: ``baseline`` (None = zeros, a number, ``"mean"``, or a tensor, see
    :func:`baselines_for`); ``steps`` (32) and ``rule`` (``"gausslegendre"`` as captum's
    default, ``"riemann_trapezoid"``, ``"riemann_left"``, ``"riemann_right"``,
    ``"riemann_middle"``) of the path integral; ``reduce`` (``"sum"``, which keeps
    completeness: each map sums to ``S_k(x) - S_k(x')`` up to the quadrature error);
    ``chunk_size`` (path points per forward; None: :func:`loupe._autograd.gradient_chunk_size`,
    off CUDA 16 for small inputs and fewer for large ones, from free memory on CUDA). Returns
    ``(B, K, H, W)``.
    """
    images = ctx.images
    alphas, weights = quadrature(rule, steps, device=images.device, dtype=images.dtype)
    return integrated_gradients_maps(
        ctx.gradient_forward(), images, ctx.targets, baselines_for(images, baseline), alphas,
        weights, reduce=reduce, chunk_size=chunk_size, progress=ctx.report_rows,
    )
