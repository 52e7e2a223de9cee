"""RISE: the target score of the image under random masks, averaged with the masks as weights.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018. ``N`` binary grids of ``s x s`` cells, each cell on with probability
``p``, are upsampled bilinearly to ``(s + 1)`` cells of ``ceil(H / s) x ceil(W / s)`` pixels
and cropped to ``H x W`` at a random shift of less than one cell; the map is
``S_k = 1 / (N p) sum_m f_k(x * M_m) M_m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from loupe.context import MapContext
from loupe.methods._perturb import (
    PERTURB_CHUNK,
    check_positive_int,
    perturb_chunk_size,
    perturbed_scores,
    seeded_generator,
    zero_padding,
)
from loupe.registry import register
from loupe.targets import Targets

# Masks built and summed per block: the accumulation order (hence the rounding of the maps)
# does not depend on the batch or chunk size.
MASK_BLOCK = 256


@dataclass(frozen=True)
class RiseMasks:
    """``N`` RISE masks ``(H, W)`` in [0, 1], built on demand from their random draws.

    grids: ``(N, s, s)`` float, 1 where a cell is on.
    shifts: ``(N, 2)`` long, the crop's offset ``(dy, dx)``, ``0 <= d < cell side``.
    size: ``(H, W)``, the images' size.
    """

    grids: torch.Tensor
    shifts: torch.Tensor
    size: tuple[int, int]

    def __len__(self) -> int:
        return self.grids.shape[0]

    @property
    def cell(self) -> tuple[int, int]:
        """Cell side in pixels, ``(ceil(H / s), ceil(W / s))``."""
        return math.ceil(self.size[0] / self.grids.shape[1]), math.ceil(
            self.size[1] / self.grids.shape[2])

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """``(n, H, W)`` masks ``index`` (a 1D long tensor): grids upsampled bilinearly
        (``align_corners=False``, edges replicated, as the authors' ``skimage`` resize with
        ``mode="reflect"``) to ``(s + 1) * cell`` and cropped at their shifts."""
        grids, shifts = self.grids[index], self.shifts[index]
        up = [(n + 1) * c for n, c in zip(grids.shape[1:], self.cell, strict=True)]
        smooth = F.interpolate(grids[:, None], size=up, mode="bilinear", align_corners=False)
        rows = shifts[:, 0, None] + torch.arange(self.size[0], device=grids.device)  # (n, H)
        cols = shifts[:, 1, None] + torch.arange(self.size[1], device=grids.device)  # (n, W)
        which = torch.arange(grids.shape[0], device=grids.device)[:, None, None]
        return smooth[:, 0][which, rows[:, :, None], cols[:, None, :]]


def rise_masks(
    n_masks: int,
    size: tuple[int, int],
    cells: int = 7,
    p: float = 0.5,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> RiseMasks:
    """The random draws of ``n_masks`` RISE masks for images of ``size`` ``(H, W)``.

    Drawn with ``generator`` if given, else with a CPU generator seeded with ``seed``, in
    this order: ``torch.rand((N, s, s)) < p`` (the grids), then the row and column shifts
    ``torch.randint(cell, (N,))``; returned on ``device``. The same seed gives the same masks
    on every device and for any batch of images."""
    check_positive_int("n_masks", n_masks)
    check_positive_int("cells", cells)
    if isinstance(p, bool) or not isinstance(p, Real) or not 0 < p <= 1:
        raise ValueError(f"p must be a probability in (0, 1], got {p!r}")
    draws = seeded_generator(seed, generator)
    on = draws.device
    grids = (torch.rand((n_masks, cells, cells), generator=draws, device=on) < p).float()
    cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
    dy = torch.randint(cell[0], (n_masks,), generator=draws, device=on)
    dx = torch.randint(cell[1], (n_masks,), generator=draws, device=on)
    shifts = torch.stack([dy, dx], dim=1)
    return RiseMasks(grids.to(device), shifts.to(device), (int(size[0]), int(size[1])))


def rise_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Targets,
    masks: RiseMasks | torch.Tensor,
    p: float,
    *,
    softmax: bool = True,
    chunk_size: int = PERTURB_CHUNK,
) -> torch.Tensor:
    """``(B, K, H, W)`` RISE maps ``1 / (N p) sum_m f_k(x * M_m) M_m``.

    Args:
        images: ``(B, C, H, W)``.
        masks: ``N`` masks: :class:`RiseMasks`, or any ``(N, H, W)`` tensor.
        p: the probability of a cell being on, ``E[M]``.
        softmax: ``f_k`` is the class probability (softmax of the output), as in the paper;
            False: the raw output (logit). Class targets only; score functions get the raw
            output.
        chunk_size: masked copies (of any images and masks) per forward.

    Rows are ``mask * B + image``; masks are built and summed ``MASK_BLOCK`` at a time, one
    matrix product per block."""
    check_positive_int("chunk_size", chunk_size)
    targets = targets.ensure_bound(model, images)
    batch, k = images.shape[0], targets.count
    total = torch.zeros(batch, k, images.shape[-2] * images.shape[-1], device=images.device)
    owner_of = torch.arange(batch, device=images.device)
    for block in torch.arange(len(masks), device=images.device).split(MASK_BLOCK):
        weights = masks[block].to(images.device, torch.float32)  # (n, H, W)

        def build(rows: torch.Tensor, weights: torch.Tensor = weights) -> torch.Tensor:
            return images[rows % batch] * weights[rows // batch, None].to(images.dtype)

        owner = owner_of.repeat(block.numel())
        scores = perturbed_scores(model, targets, owner, build, chunk_size, softmax=softmax)
        total += torch.einsum("nbk,nx->bkx", scores.view(block.numel(), batch, k),
                              weights.flatten(1))
    maps = total.view(batch, k, *images.shape[-2:]) / (len(masks) * p)
    return zero_padding(maps, targets)


@register(
    "rise", uses_layer=False, gradients=False, stochastic=True,
    paper="Petsiuk et al., RISE: Randomized Input Sampling for Explanation, BMVC 2018",
)
def rise(
    ctx: MapContext,
    *,
    n_masks: int = 4000,
    cells: int = 7,
    p: float = 0.5,
    softmax: bool = True,
    chunk_size: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RISE: ``S_k = 1 / (N p) sum_m f_k(x * M_m) M_m`` over ``N`` random smooth masks
    ``M_m`` (Petsiuk et al. 2018; see :func:`rise_masks`).

    Options: ``n_masks`` (N, 4000), ``cells`` (s, 7) and ``p`` (0.5): the paper's setting
    for ResNet-50; ``softmax`` (True: class probabilities, as the paper; False: logits);
    ``chunk_size`` (masked copies per forward, across images and masks; None: 32 on CUDA, on
    the CPU fewer for large inputs, see :func:`~loupe.methods._perturb.perturb_chunk_size`);
    ``seed`` (0) or
    a ``generator``. The masks are shared by all images, so the same seed gives the same maps
    on any batch and chunk size. Returns ``(B, K, H, W)`` at the input's resolution. Cost:
    ``ceil(B N / chunk_size)`` forwards under ``torch.no_grad`` (plus one of the clean images
    for top-1 targets).
    """
    chunk_size = perturb_chunk_size(chunk_size, ctx.images)
    if not isinstance(softmax, bool):
        raise ValueError(f"softmax must be True or False, got {softmax!r}")
    images = ctx.images
    masks = rise_masks(n_masks, images.shape[-2:], cells, p, seed=seed, generator=generator,
                       device=images.device)
    return rise_maps(ctx.model, images, ctx.targets, masks, p, softmax=softmax,
                     chunk_size=chunk_size)
