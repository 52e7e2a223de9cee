"""The one-forward, no-backward methods (CAM, EigenCAM, KPCA-CAM, RandomCAM) run the model under
``torch.inference_mode`` (:meth:`loupe.context.MapContext.inference_output`), or under
``torch.no_grad`` with ``LOUPE_INFERENCE_MODE=0``; their maps are ordinary tensors either way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import loupe
from loupe.context import INFERENCE_ENV

METHODS = ["cam", "eigencam", "kpcacam", "randomcam"]


class Recording(nn.Module):
    """A GAP + linear classifier that records the autograd modes of each forward and, when
    ``cache`` is set, keeps a tensor made in its first forward and uses it afterwards."""

    def __init__(self, cache: bool = False) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)
        self.modes: list[tuple[bool, bool]] = []
        self.cache = cache
        self.kept: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        a = self.features(x)
        if self.cache:
            if self.kept is None:
                self.kept = torch.ones(a.shape[1], 1, 1)
            a = a * self.kept
        return self.fc(a.mean((2, 3)))


def _explain(model: nn.Module, method: str) -> torch.Tensor:
    torch.manual_seed(0)
    return loupe.explain(model, torch.randn(2, 3, 8, 8), [1, 2], method=method,
                         target_layer="features")


@pytest.mark.parametrize("method", METHODS)
def test_the_forward_runs_in_inference_mode_and_the_maps_are_ordinary(method):
    model = Recording()
    maps = _explain(model, method)
    assert model.modes == [(True, False)]
    assert not maps.is_inference()
    maps.add_(1).requires_grad_(True)  # an inference tensor would refuse both


@pytest.mark.parametrize("method", METHODS)
def test_the_switch_runs_it_under_no_grad_with_the_same_maps(method, monkeypatch):
    model = Recording()
    inference = _explain(model, method)
    monkeypatch.setenv(INFERENCE_ENV, "0")
    assert torch.equal(_explain(model, method), inference)
    assert model.modes == [(True, False), (False, False)]


def test_a_cache_made_in_inference_mode_stops_a_later_backward_unless_switched_off(monkeypatch):
    """What the switch is for: a tensor the model keeps from a CAM forward is an inference
    tensor, which Grad-CAM's backward cannot save; under the switch it is an ordinary one."""
    model = Recording(cache=True)
    _explain(model, "cam")
    assert model.kept.is_inference()
    with pytest.raises(RuntimeError, match="[Ii]nference tensor"):
        _explain(model, "gradcam")
    model = Recording(cache=True)
    monkeypatch.setenv(INFERENCE_ENV, "0")
    _explain(model, "cam")
    assert torch.isfinite(_explain(model, "gradcam")).all()
