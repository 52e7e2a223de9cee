"""Index maths of shuffle saliency: one shuffle round as a pair of index maps.

A round turns an image ``(H, W)`` into a model input, the *canvas* ``(Hc, Wc)``, and a map
computed on the canvas back into a map of the image. Both directions are single gathers:

- ``round.source`` ``(Hc*Wc,)``: for every canvas position, the flat index of the image pixel
  placed there, so ``canvas = image.flatten(-2)[..., source].unflatten(-1, (Hc, Wc))``;
- ``round.placement`` ``(H*W,)``: for every image pixel, the one canvas position where it was
  placed and is counted, so ``unshuffled = canvas_map.flatten(-2)[..., placement]``.

``source[placement] == arange(H*W)`` always holds, so un-shuffling a shuffled image gives the
image back exactly, and every image pixel is seen (and counted) exactly once per round.

Two ways to offset the tile grid by ``(dy, dx)`` (so that tile borders fall in different
places each round):

``cyclic`` (canvas = image size; ``source`` is a permutation of ``arange(H*W)``)
    The image is rolled: canvas pixel ``(i, j)`` first takes image pixel
    ``((i + dy) mod H, (j + dx) mod W)``, so tiles wrap around the border. The rolled image
    is cut into ``g x g`` tiles of equal size ``(H // g, W // g)`` starting at the top left;
    the tiles are permuted. When ``H`` (or ``W``) is not a multiple of ``g``, the last
    ``H mod g < g`` rows (columns) of the rolled image are a seam that stays in place. Equal
    tiles keep every permutation a pure tile swap (tiles of unequal size cannot swap), and
    because the roll is uniform over ``[0, H) x [0, W)`` the seam lands anywhere in the image.

``pad`` (canvas larger than the image; padding is a mirror reflection of the image)
    The image is placed at ``(dy, dx)`` on a canvas of ``g x g`` equal tiles of size
    ``th = ceil((H + dy) / g)``, ``tw = ceil((W + dx) / g)``, the rest of the canvas is
    reflect padding (``torch.nn.functional.pad(mode="reflect")``, mirrored again if the pad
    exceeds the image); the whole canvas is tile-permuted and fed to the model, and only the
    image's own pixels are read back. With ``dy`` drawn from ``[0, ceil(H / g))`` the
    padding is ``dy + (0 .. g-1)`` rows, the least that gives ``g`` equal tiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

OFFSETS = ("cyclic", "pad")


@dataclass(frozen=True)
class Round:
    """One shuffle round (see the module docstring).

    source: ``(Hc*Wc,)`` long, canvas position -> image pixel (flat indices).
    placement: ``(H*W,)`` long, image pixel -> canvas position where it is counted.
    canvas: ``(Hc, Wc)``, the model input size of this round.
    grid, dy, dx, tile_perm: how it was made (``tile_perm[t]`` is the source tile of output
    tile ``t``, tiles numbered row-major); ``grid == 1`` with zero offsets is the identity.
    """

    source: torch.Tensor
    placement: torch.Tensor
    canvas: tuple[int, int]
    grid: int
    dy: int
    dx: int
    tile_perm: tuple[int, ...]


def tile_swap_index(
    canvas: tuple[int, int],
    grid: int,
    tile: tuple[int, int],
    tile_perm: Sequence[int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``(Hc*Wc,)`` canvas -> canvas index of a tile permutation: output position ``p`` takes
    the content of position ``index[p]``. Tiles of size ``tile`` cover the top-left
    ``(grid*th, grid*tw)`` of the canvas; output tile ``t`` (row-major) takes source tile
    ``tile_perm[t]``; positions outside the tiled area map to themselves."""
    (hc, wc), (th, tw) = canvas, tile
    ys = torch.arange(hc, device=device)[:, None]
    xs = torch.arange(wc, device=device)[None, :]
    covered = (ys < grid * th) & (xs < grid * tw)
    out_tile = (ys // max(th, 1)).clamp(max=grid - 1) * grid + (xs // max(tw, 1)).clamp(
        max=grid - 1
    )
    perm = torch.as_tensor(list(tile_perm), dtype=torch.long, device=device)
    src_tile = perm[out_tile]
    src_y = (src_tile // grid) * th + ys % max(th, 1)
    src_x = (src_tile % grid) * tw + xs % max(tw, 1)
    src_y = torch.where(covered, src_y, ys.expand(hc, wc))
    src_x = torch.where(covered, src_x, xs.expand(hc, wc))
    return (src_y * wc + src_x).flatten()


def inverse_index(index: torch.Tensor) -> torch.Tensor:
    """The inverse of a permutation ``index`` of ``arange(n)`` along its last dimension (each
    row of a ``(..., n)`` stack inverted): ``inverse[..., index[..., i]] = i``."""
    arange = torch.arange(index.shape[-1], device=index.device).expand_as(index)
    return torch.empty_like(index).scatter_(-1, index, arange)  # 4x index_put's speed


def reflect_index(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror coordinates into ``[0, size)`` without repeating the edge pixel (the rule of
    ``F.pad(mode="reflect")``), applied repeatedly for coordinates far outside."""
    if size == 1:
        return torch.zeros_like(coords)
    period = 2 * (size - 1)
    folded = coords.remainder(period)
    return torch.where(folded < size, folded, period - folded)


def _check_tile_perm(grid: int, tile_perm: Sequence[int]) -> None:
    if sorted(tile_perm) != list(range(grid * grid)):
        raise ValueError(f"tile_perm must be a permutation of 0..{grid * grid - 1}")


def cyclic_round(
    height: int,
    width: int,
    grid: int,
    dy: int,
    dx: int,
    tile_perm: Sequence[int],
    device: torch.device | str = "cpu",
) -> Round:
    """A round in ``cyclic`` mode: roll by ``(dy, dx)``, swap ``(H//g, W//g)`` tiles."""
    _check_tile_perm(grid, tile_perm)
    (round_,) = cyclic_rounds(height, width, grid, [(dy, dx, tuple(tile_perm))], device)
    return round_


def cyclic_rounds(
    height: int,
    width: int,
    grid: int,
    draws: Sequence[tuple[int, int, tuple[int, ...]]],
    device: torch.device | str = "cpu",
) -> list[Round]:
    """The ``cyclic`` rounds of one ``grid`` for ``draws`` ``(dy, dx, tile_perm)``, built
    together in a fixed number of ops (not a few per round; permutations not checked)."""
    count = len(draws)
    dy = torch.tensor([d[0] for d in draws], device=device)[:, None]
    dx = torch.tensor([d[1] for d in draws], device=device)[:, None]
    rows = (torch.arange(height, device=device) + dy) % height * width  # (R, H) rolled -> image
    cols = (torch.arange(width, device=device) + dx) % width  # (R, W)
    th, tw = height // grid, width // grid
    # The rolled image (the seam included), then the tiled area swapped: in round r, output
    # tile (a, b) holds source tile s = perm[r, a, b], whose pixel (i, j) is rolled row
    # s // g * th + i and rolled column s % g * tw + j, an outer sum of a row and a column.
    source = rows[:, :, None] + cols[:, None, :]  # (R, H, W)
    perm = torch.tensor([d[2] for d in draws], device=device).view(count, grid, grid)
    r = torch.arange(count, device=device)[:, None, None]
    tile_rows = rows[:, : grid * th].view(count, grid, th)[r, perm // grid]  # (R, g, g, th)
    tile_cols = cols[:, : grid * tw].view(count, grid, tw)[r, perm % grid]  # (R, g, g, tw)
    blocks = tile_rows[..., :, None] + tile_cols[..., None, :]  # (R, g, g, th, tw)
    source[:, : grid * th, : grid * tw] = blocks.permute(0, 1, 3, 2, 4).reshape(
        count, grid * th, grid * tw)
    source = source.flatten(1)
    placement = inverse_index(source)
    return [Round(source[i], placement[i], (height, width), grid, d[0], d[1], tuple(d[2]))
            for i, d in enumerate(draws)]


def padded_round(
    height: int,
    width: int,
    grid: int,
    dy: int,
    dx: int,
    tile_perm: Sequence[int],
    device: torch.device | str = "cpu",
) -> Round:
    """A round in ``pad`` mode: image at ``(dy, dx)`` on a reflect-padded canvas of ``g x g``
    equal tiles of ``(ceil((H+dy)/g), ceil((W+dx)/g))``, whole canvas tile-swapped."""
    _check_tile_perm(grid, tile_perm)
    th, tw = -(-(height + dy) // grid), -(-(width + dx) // grid)
    hc, wc = grid * th, grid * tw
    ys = reflect_index(torch.arange(hc, device=device) - dy, height)
    xs = reflect_index(torch.arange(wc, device=device) - dx, width)
    padded = (ys[:, None] * width + xs[None, :]).flatten()  # canvas -> image
    swap = tile_swap_index((hc, wc), grid, (th, tw), tile_perm, device)
    inner_y = torch.arange(height, device=device) + dy
    inner_x = torch.arange(width, device=device) + dx
    inner = (inner_y[:, None] * wc + inner_x[None, :]).flatten()  # image -> unshuffled canvas
    placement = inverse_index(swap)[inner]
    return Round(padded[swap], placement, (hc, wc), grid, dy, dx, tuple(tile_perm))


def identity_round(height: int, width: int, device: torch.device | str = "cpu") -> Round:
    """The unshuffled image as a round (``include_original``)."""
    index = torch.arange(height * width, device=device)
    return Round(index, index, (height, width), 1, 0, 0, (0,))


def check_grids(grids: object, height: int, width: int) -> tuple[int, ...]:
    """``grids`` as a tuple of ints in ``[1, min(H, W)]``; a ValueError saying why not."""
    if isinstance(grids, int) and not isinstance(grids, bool):
        grids = (grids,)
    if (
        not isinstance(grids, Sequence)
        or not grids
        or not all(isinstance(g, int) and not isinstance(g, bool) for g in grids)
    ):
        raise ValueError(
            f"grids must be a non-empty sequence of ints (e.g. (2, 3, 4)), got {grids!r}"
        )
    bad = [g for g in grids if not 1 <= g <= min(height, width)]
    if bad:
        raise ValueError(
            f"grids {tuple(grids)} contains {bad[0]}, but a grid g needs 1 <= g <= min(H, W) "
            f"= {min(height, width)} for an image of {height}x{width}"
        )
    return tuple(grids)


def _draw(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=generator, device=generator.device))


def _draw_parameters(
    height: int, width: int, count: int, grids: tuple[int, ...], jitter: bool, offset: str,
    generator: torch.Generator,
) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """``(grid, dy, dx, tile_perm)`` of ``count`` rounds, drawn round by round in the order
    :func:`draw_rounds` documents."""
    draws = []
    for _ in range(count):
        grid = grids[_draw(len(grids), generator)]
        tile_perm = torch.randperm(grid * grid, generator=generator, device=generator.device)
        dy = dx = 0
        if jitter:
            span_y = height if offset == "cyclic" else math.ceil(height / grid)
            span_x = width if offset == "cyclic" else math.ceil(width / grid)
            dy, dx = _draw(span_y, generator), _draw(span_x, generator)
        draws.append((grid, dy, dx, tuple(tile_perm.tolist())))
    return draws


def draw_rounds(
    height: int,
    width: int,
    count: int,
    grids: Sequence[int],
    *,
    jitter: bool,
    offset: str,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> list[Round]:
    """``count`` random rounds for an ``H x W`` image. Each round draws, in this order, a grid
    ``g`` from ``grids``, a tile permutation (``randperm(g*g)``) and, with ``jitter``, the
    offset ``dy, dx`` (cyclic: uniform in ``[0, H) x [0, W)``; pad: uniform in
    ``[0, ceil(H/g)) x [0, ceil(W/g))``). The draws depend only on ``H, W``, the options
    and the generator's state, never on the batch. The cyclic rounds of each grid are built
    together (:func:`cyclic_rounds`)."""
    if offset not in OFFSETS:
        raise ValueError(f"offset must be one of {OFFSETS}, got {offset!r}")
    draws = _draw_parameters(height, width, count, check_grids(grids, height, width),
                             jitter, offset, generator)
    if offset == "pad":
        return [padded_round(height, width, g, dy, dx, perm, device)
                for g, dy, dx, perm in draws]
    rounds: list[Round | None] = [None] * count
    for grid in dict.fromkeys(g for g, *_ in draws):  # the cyclic rounds of a grid together
        where = [i for i, d in enumerate(draws) if d[0] == grid]
        made = cyclic_rounds(height, width, grid, [draws[i][1:] for i in where], device)
        for i, round_ in zip(where, made, strict=True):
            rounds[i] = round_
    return rounds  # type: ignore[return-value]


def shuffle_images(images: torch.Tensor, round_: Round) -> torch.Tensor:
    """``(..., H, W)`` images -> ``(..., Hc, Wc)`` model input of ``round_`` (one gather)."""
    return images.flatten(-2)[..., round_.source].unflatten(-1, round_.canvas)


def unshuffle_maps(maps: torch.Tensor, round_: Round, size: tuple[int, int]) -> torch.Tensor:
    """``(..., Hc, Wc)`` canvas maps -> ``(..., H, W)``: each image pixel reads the canvas
    position where it was placed (one gather; padding is dropped)."""
    return maps.flatten(-2)[..., round_.placement].unflatten(-1, size)
