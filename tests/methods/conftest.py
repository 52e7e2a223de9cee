"""Fixtures shared by the method tests."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18


@pytest.fixture(scope="session")
def seeded_resnet18() -> torch.nn.Module:
    """torchvision's resnet18 with the random weights of ``torch.manual_seed(0)``, in eval
    mode: the model the peers are compared on. Tests must not modify it."""
    torch.manual_seed(0)
    return resnet18(weights=None).eval()
