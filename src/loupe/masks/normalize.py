"""Min-max normalisation of maps, the one every metric, mask and overlay applies."""

from __future__ import annotations

import torch


def normalize(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-map min-max normalisation of ``(..., H, W)`` maps to [0, 1]; constant maps -> 0."""
    flat = maps.flatten(-2)
    low = flat.min(-1, keepdim=True).values
    high = flat.max(-1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp(min=eps)
    return scaled.where(high - low > eps, torch.zeros_like(scaled)).view_as(maps)
