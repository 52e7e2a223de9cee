"""Tiny seeded models and maps shared by the faithfulness tests."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(classes: int = 5, seed: int = 0) -> nn.Module:
    """conv-relu-conv-relu-pool-linear with seeded random weights, in eval mode; its block
    structure (``features.*``, ``head``) is what the cascade reads."""
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2),
        nn.ReLU(),
    ))
    model.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    model.add_module("head", nn.Linear(16, classes))
    return model.eval()


def images(batch: int = 3, size: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def distinct_maps(batch: int, size: int, seed: int = 2) -> torch.Tensor:
    """``(B, size, size)`` maps in [0, 1] whose values are a random permutation of an even
    grid (no ties, min 0, max 1, far apart in float32), smooth enough to look like a map."""
    generator = torch.Generator().manual_seed(seed)
    pixels = size * size
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    maps = []
    for _ in range(batch):
        cy, cx = torch.rand(2, generator=generator) * size
        blob = -((yy - cy) ** 2 + (xx - cx) ** 2).float()
        blob = blob + 1e-3 * torch.rand(size, size, generator=generator)  # break ties
        ranks = blob.flatten().argsort().argsort().float()
        maps.append((ranks / (pixels - 1)).view(size, size))
    return torch.stack(maps)
