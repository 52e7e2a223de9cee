"""Shared fixtures. Real data comes from ../shared/assets, overridable with LOUPE_ASSETS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Marks of a test that needs a GPU: selected by `pytest -m cuda` (bench/gpu_check.sh), skipped
# without CUDA. DEVICES parametrizes a test over the CPU and, where there is one, the GPU.
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                             reason="no CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


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


@contextmanager
def exact_cuda_arithmetic() -> Iterator[None]:
    """float32 convolutions and matrix products without TF32 and with deterministic cuDNN
    algorithms, for tests that compare GPU results at float32 rounding (restored on exit)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved
