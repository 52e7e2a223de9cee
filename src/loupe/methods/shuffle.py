"""Shuffle saliency: gradient saliency averaged over tile-shuffled copies of the image.

What
    For each of ``T`` rounds: draw a grid ``g x g`` (``g`` from ``grids``), a random offset of
    that grid and a random permutation of its tiles; build the shuffled image; take the
    gradient of the target score with respect to the shuffled input; move every pixel of that
    gradient back to where it came from; reduce over colour channels; add it up. The map is
    the mean over rounds::

        M_k(x) = 1/T sum_t  P_t^-1( reduce_c( dS_k / dz |_{z = P_t x} ) )

    where ``P_t`` is round ``t``'s pixel permutation (see :mod:`loupe.methods._tiles` for the
    exact index maps, also for image sizes that are not multiples of ``g``).

Why
    CAMs light up only the most discriminative part of an object; raw gradient saliency covers
    more but is noisy. Shuffling tiles breaks the spatial correlation between the parts of an
    object, so the classifier has to use evidence from parts it normally ignores, and the mean
    over many random shuffles cancels the noise that is specific to one arrangement. Every
    pixel of the image is seen by the model, and counted, exactly once per round.

Options (defaults and why)
    n_shuffles=32
        ``T``; the map's noise falls like ``1/sqrt(T)``; 32 is where the maps of resnets stop
        changing visibly (as for SmoothGrad's sample count).
    grids=(2, 3, 4)
        the tile counts per side to draw from: coarse grids keep parts whole, fine grids break
        them; 1 is allowed (no shuffle) and every ``g`` must be ``<= min(H, W)``.
    jitter=True
        random grid offset per round, so tile borders fall in different places and the map
        shows no grid pattern; False puts the grid at the top left every round.
    offset="cyclic"
        ``"cyclic"`` rolls the image before tiling (tiles wrap around the border); the model
        sees only image pixels and all rounds batch together. ``"pad"`` reflect-pads the
        image to a multiple of the tile size, shuffles and feeds the whole padded canvas and
        crops the un-shuffled gradient back; the model sees extra (mirrored) content, and
        rounds batch together only when their canvases have the same size.
    include_original=True
        also average in the unshuffled image (one more round, plain saliency). On because
        the study (docs/shuffle-saliency.md) found it never hurts and helps a little:
        +0.4 [+0.3, +0.5] mIoU points on the synthetic set, +0.3 [-0.4, +0.8] on coco128.
    reduce="abs-max"
        colour reduction of the gradient ``g``: ``"abs-max"`` ``max_c |g_c|`` (Simonyan et
        al.), ``"l2"`` ``||g||_2`` over channels, ``"grad-x-input"`` ``sum_c g_c x_c`` (signed).
        Only for ``base="gradient"``.
    chunk_size=None
        shuffled copies per forward/backward (all K targets share one batched backward);
        results do not change. None: ``loupe._autograd.gradient_chunk_size``, 16 off CUDA
        (CPUs get slower per image in larger batches) and as many as fit in half the free
        memory on CUDA; lower it to save memory.
    seed=0, generator=None
        the rounds are drawn once from ``torch.Generator().manual_seed(seed)`` (or from
        ``generator`` when given) and applied to every image, so the maps do not depend on
        the batch size or chunk size, and a batch's maps equal each image's maps alone.
    smooth=0.0
        sigma in pixels of a Gaussian blur of the result (reflect border); 0 = off.
    base="gradient"
        ``"gradient"`` as above, or the name of a registered map method (``"gradcam"``,
        ``"cam"``, ...) computed on each shuffled canvas, upsampled to it and un-shuffled the
        same way. ``base_options`` are passed to it; ``target_layer`` names its layer (found
        with :func:`loupe.find_target_layer` when None).

Targets are bound on the clean image first, so ``targets=None`` explains the top-1 class of
the unshuffled image. Paper: none; this is loupe's own method.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from loupe._autograd import gradient_chunk_size
from loupe.api import explain
from loupe.context import MapContext
from loupe.layers import find_target_layer
from loupe.methods._tiles import OFFSETS, Round, check_grids, draw_rounds, identity_round
from loupe.methods.gradients import input_gradients
from loupe.registry import get_method, register
from loupe.targets import Targets

logger = logging.getLogger(__name__)

REDUCTIONS = ("abs-max", "l2", "grad-x-input")

# (model, canvases (n, C, Hc, Wc), targets of the n rows) -> maps (n, K, Hc, Wc)
CanvasMaps = Callable[[nn.Module, torch.Tensor, Targets], torch.Tensor]


@register(
    "shuffle",
    uses_layer=False,
    stochastic=True,
    paper="loupe: gradient saliency averaged over random tile shuffles (no paper)",
)
def shuffle_saliency(
    ctx: MapContext,
    *,
    n_shuffles: int = 32,
    grids: Sequence[int] = (2, 3, 4),
    jitter: bool = True,
    offset: str = "cyclic",
    include_original: bool = True,
    reduce: str = "abs-max",
    chunk_size: int | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    smooth: float = 0.0,
    base: str = "gradient",
    base_options: Mapping[str, object] | None = None,
    target_layer: str | None = None,
) -> torch.Tensor:
    """Shuffle saliency maps ``(B, K, H, W)`` float32 of ``ctx.images`` ``(B, C, H, W)``.

    ``M_k = mean_t P_t^-1(reduce_c(dS_k/dz at z = P_t x))``; options in the module docstring.
    """
    images = ctx.images
    height, width = images.shape[-2:]
    if chunk_size is None:
        chunk_size = gradient_chunk_size(images.device, images[0].numel(), ctx.targets.count)
    _check_options(n_shuffles, offset, reduce, chunk_size, seed, generator, smooth, base)
    grids = check_grids(grids, height, width)
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    rounds = draw_rounds(
        height, width, n_shuffles, grids, jitter=bool(jitter), offset=offset,
        generator=generator, device=images.device,
    )
    if include_original:
        rounds.insert(0, identity_round(height, width, images.device))
    targets = ctx.targets.ensure_bound(ctx.model, images)
    canvas_maps = _canvas_maps_function(ctx, base, reduce, base_options, target_layer)
    sums = torch.zeros(
        images.shape[0], targets.count, height * width, dtype=torch.float32, device=images.device
    )
    done, total = 0, images.shape[0] * len(rounds)
    for group in _rounds_by_canvas(rounds):
        _accumulate(sums, ctx.model, images, targets, group, canvas_maps, chunk_size,
                    lambda rows, before=done: ctx.report_rows(before + rows, total))
        done += images.shape[0] * len(group)
    maps = (sums / len(rounds)).unflatten(-1, (height, width))
    return gaussian_blur(maps, smooth) if smooth > 0 else maps


def _check_options(
    n_shuffles: object,
    offset: object,
    reduce: object,
    chunk_size: object,
    seed: object,
    generator: object,
    smooth: object,
    base: object,
) -> None:
    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(n_shuffles) or n_shuffles < 1:
        raise ValueError(f"n_shuffles must be an int >= 1, got {n_shuffles!r}")
    if offset not in OFFSETS:
        raise ValueError(f"offset must be one of {OFFSETS}, got {offset!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if not is_int(chunk_size) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if not is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not isinstance(smooth, (int, float)) or isinstance(smooth, bool) or not smooth >= 0:
        raise ValueError(f"smooth must be a Gaussian sigma >= 0 in pixels, got {smooth!r}")
    if not isinstance(base, str):
        raise ValueError(f"base must be 'gradient' or a method name, got {base!r}")
    if base == "shuffle":
        raise ValueError("base='shuffle' would shuffle shuffled images; choose another method")


def _canvas_maps_function(
    ctx: MapContext,
    base: str,
    reduce: str,
    base_options: Mapping[str, object] | None,
    target_layer: str | None,
) -> CanvasMaps:
    """How one chunk of canvases becomes maps: the reduced input gradient, or a map method."""
    if base == "gradient":
        if base_options:
            raise ValueError("base_options are for a map method base, not base='gradient'")
        return lambda model, canvases, targets: gradient_maps(model, canvases, targets, reduce)
    try:
        spec = get_method(base)
    except ValueError as error:
        raise ValueError(f"base must be 'gradient' or a registered method: {error}") from None
    if reduce != "abs-max":
        raise ValueError(f"reduce={reduce!r} applies to base='gradient' only, not base={base!r}")
    layer = None
    if spec.uses_layer:
        layer = target_layer or find_target_layer(ctx.model, ctx.images)
    options = dict(base_options or {})

    def method_maps(model: nn.Module, canvases: torch.Tensor, targets: Targets) -> torch.Tensor:
        given = list(targets.functions) if targets.functions is not None else targets.classes
        return explain(
            model, canvases, given, method=base, target_layer=layer, reshape=ctx.reshape,
            **options,
        )

    return method_maps


def gradient_maps(
    model: nn.Module, canvases: torch.Tensor, targets: Targets, reduce: str = "abs-max"
) -> torch.Tensor:
    """Colour-reduced input gradients ``(n, K, Hc, Wc)`` of the target scores of ``canvases``
    ``(n, C, Hc, Wc)``: one forward, one batched backward for the K targets
    (:func:`loupe.methods.gradients.input_gradients`)."""
    grads = input_gradients(model, canvases, targets).transpose(0, 1).float()  # (n, K, C, ..)
    if reduce == "abs-max":
        return grads.abs().amax(2)
    if reduce == "l2":
        return torch.linalg.vector_norm(grads, dim=2)
    return (grads * canvases.detach()[:, None].float()).sum(2)


def _rounds_by_canvas(rounds: list[Round]) -> list[list[Round]]:
    """Rounds grouped by canvas size (one group in cyclic mode), in order of first use."""
    groups: dict[tuple[int, int], list[Round]] = {}
    for round_ in rounds:
        groups.setdefault(round_.canvas, []).append(round_)
    logger.debug("shuffle: %d rounds in %d canvas size(s)", len(rounds), len(groups))
    return list(groups.values())


def _accumulate(
    sums: torch.Tensor,
    model: nn.Module,
    images: torch.Tensor,
    targets: Targets,
    rounds: list[Round],
    canvas_maps: CanvasMaps,
    chunk_size: int,
    report: Callable[[int], None] | None = None,
) -> None:
    """Add the un-shuffled maps of ``rounds`` (same canvas) of every image to ``sums``
    ``(B, K, H*W)``. Rows are (image, round) pairs, image-major; each chunk of rows is built
    with one gather, goes through the model once and is un-shuffled with one gather;
    ``report`` gets the rows done after each chunk."""
    batch, channels = images.shape[:2]
    sources = torch.stack([r.source for r in rounds])  # (R, P)
    placements = torch.stack([r.placement for r in rounds])  # (R, H*W)
    flat = images.flatten(2)  # (B, C, H*W)
    channel = torch.arange(channels, device=images.device)[None, :, None]
    rows = torch.arange(batch * len(rounds), device=images.device)
    for index, chunk in enumerate(rows.split(chunk_size)):
        image_of, round_of = chunk // len(rounds), chunk % len(rounds)
        # canvases[n, c, p] = images[image_of[n], c, source of round round_of[n] at p]
        picked = flat[image_of[:, None, None], channel, sources[round_of][:, None, :]]
        canvases = picked.unflatten(-1, rounds[0].canvas)
        maps = canvas_maps(model, canvases, targets.of_rows(image_of)).float()
        k = maps.shape[1]
        back = maps.flatten(2).gather(2, placements[round_of][:, None, :].expand(-1, k, -1))
        sums.index_add_(0, image_of, back)
        if report is not None:
            report(min((index + 1) * chunk_size, rows.numel()))


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(..., H, W)`` maps blurred by a normalised Gaussian of ``sigma`` pixels (kernel
    radius ``ceil(3 sigma)``, reflect border as torchvision, replicate where the image is
    smaller than the radius), separably, on the maps' device."""
    radius = math.ceil(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    shape = maps.shape
    planes = maps.reshape(-1, 1, *shape[-2:])
    mode = "reflect" if radius < min(shape[-2:]) else "replicate"
    planes = F.pad(planes, (radius, radius, radius, radius), mode=mode)
    planes = F.conv2d(planes, kernel.view(1, 1, 1, -1))
    planes = F.conv2d(planes, kernel.view(1, 1, -1, 1))
    return planes.reshape(shape)
