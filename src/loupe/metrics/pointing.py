"""Pointing games: does the map point at the object?

- Pointing game (Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down Neural Attention by
  Excitation Backprop", ECCV 2016 / IJCV 2018): a hit when the map's maximum lies within
  ``tolerance`` pixels (15 in the paper and TorchRay) of the object's region; the score is the
  fraction of hits. The maximum is the first one in raster order.
- Energy-based pointing game (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
  Convolutional Neural Networks", CVPRW 2020): the share of the map's energy inside the
  region, ``sum_{p in R} M(p) / sum_p M(p)`` with ``M`` min-max normalised to [0, 1]; a
  constant map counts as uniform (its share is the region's area fraction).

Regions are boolean masks ``(B, K, H, W)``, one per map (the class's pixels, or its boxes
drawn with :func:`box_regions`). Pure tensor functions: no model, no forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loupe.masks.normalize import normalize


def _aligned(maps: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps and regions as ``(B, K, H, W)`` on the regions' device, maps resized to them."""
    if not isinstance(regions, torch.Tensor) or regions.dim() not in (3, 4):
        shape = tuple(regions.shape) if isinstance(regions, torch.Tensor) else type(regions)
        raise ValueError(f"regions must be a bool tensor (B, K, H, W) or (B, H, W), got {shape}")
    if not isinstance(maps, torch.Tensor) or maps.dim() not in (3, 4):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor (B, K, H, W) or (B, H, W), got {shape}")
    regions = (regions[:, None] if regions.dim() == 3 else regions).bool()
    maps = maps[:, None] if maps.dim() == 3 else maps
    if maps.shape[:2] != regions.shape[:2]:
        raise ValueError(
            f"maps {tuple(maps.shape[:2])} and regions {tuple(regions.shape[:2])} must give "
            "one region per map (B, K)"
        )
    maps = maps.detach().to(regions.device, torch.float32)
    if maps.shape[-2:] != regions.shape[-2:]:
        maps = F.interpolate(maps, size=regions.shape[-2:], mode="bilinear", align_corners=False)
    return maps, regions


def pointing_game(maps: torch.Tensor, regions: torch.Tensor, *, tolerance: float = 15.0
                  ) -> torch.Tensor:
    """``(B, K)`` float hits (1.0 or 0.0) of ``maps`` ``(B, K, h, w)`` on ``regions``
    ``(B, K, H, W)`` bool: ``1[min_{p in R} ||argmax M - p|| <= tolerance]`` (Zhang et al.
    2016); NaN where a region is empty. Maps are resized bilinearly to the regions."""
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
        raise ValueError(f"tolerance must be a distance >= 0 in pixels, got {tolerance!r}")
    maps, regions = _aligned(maps, regions)
    height, width = regions.shape[-2:]
    peak = maps.flatten(2).argmax(-1)  # (B, K), first maximum in raster order
    rows = torch.arange(height, device=regions.device)[:, None]
    cols = torch.arange(width, device=regions.device)[None, :]
    dy = rows - (peak // width)[..., None, None]
    dx = cols - (peak % width)[..., None, None]
    near = (dy * dy + dx * dx <= tolerance * tolerance) & regions  # (B, K, H, W)
    hits = near.flatten(2).any(-1).float()
    return hits.where(regions.flatten(2).any(-1), torch.full_like(hits, float("nan")))


def energy_pointing_game(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` share of the normalised map inside each region,
    ``sum_R M / sum M`` (Wang et al. 2020, Score-CAM); NaN where a region is empty."""
    maps, regions = _aligned(maps, regions)
    weights = normalize(maps).flatten(2).double()
    inside = regions.flatten(2)
    total = weights.sum(-1)
    uniform = torch.ones_like(weights)
    weights = torch.where((total > 0)[..., None], weights, uniform)  # constant map: uniform
    share = (weights * inside).sum(-1) / weights.sum(-1)
    share = share.where(inside.any(-1), torch.full_like(share, float("nan")))
    return share.float()


def box_regions(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(..., H, W)`` bool: the union of the inclusive pixel boxes ``(..., n, 4)``
    ``(x0, y0, x1, y1)`` (the convention of :mod:`loupe.metrics.boxes`); boxes with
    ``x1 < x0`` (empty) add nothing."""
    if not isinstance(boxes, torch.Tensor) or boxes.dim() < 2 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a tensor (..., n, 4) of (x0, y0, x1, y1), got {shape}")
    x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))  # (..., n, 1, 1)
    rows = torch.arange(height, device=boxes.device)[:, None]
    cols = torch.arange(width, device=boxes.device)[None, :]
    inside = (rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1)  # (..., n, H, W)
    return inside.any(-3)
