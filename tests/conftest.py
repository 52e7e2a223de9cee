"""Shared fixtures. Real data comes from ../shared/assets, overridable with LOUPE_ASSETS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def assets_root() -> Path:
    """Where the shared real data lives (LOUPE_ASSETS, else ../shared/assets)."""
    return Path(os.environ.get("LOUPE_ASSETS", REPO.parent / "shared" / "assets"))


@pytest.fixture(scope="session")
def assets() -> Path:
    """The shared assets folder; the test is skipped with a reason when it is absent."""
    root = assets_root()
    if not root.is_dir():
        pytest.skip(f"real assets not found at {root} (set LOUPE_ASSETS)")
    return root


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


def count_hooks(model: torch.nn.Module) -> int:
    """All forward/backward/pre hooks registered on any module of ``model``."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )
