"""CAM in a ``loupe.explainer`` block: the linear head is found once, from the modules, when the
block starts, and still checked against every call's logits; a head that no longer fits or
reproduces them is searched for again, so the maps are always ``explain``'s (to the float
rounding of the block's frozen forward, :mod:`loupe._frozen_layer`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import loupe
from loupe.methods import cam as cam_module
from loupe.methods.heads import HeadError
from tests.conftest import count_hooks
from tests.methods.test_cam_head_check import ShiftedLogit


@pytest.fixture
def searches(monkeypatch) -> list[str]:
    """The names of the linear layers found by each per-call head search."""
    found: list[str] = []
    search = cam_module.head_search

    def counted(*args, **kwargs):
        result = search(*args, **kwargs)
        found.append(result.name)
        return result

    monkeypatch.setattr(cam_module, "head_search", counted)
    return found


def _assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The same maps up to the float rounding of a frozen copy's forward."""
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return resnet18(num_classes=7).eval()


def test_the_head_is_found_once_per_block(searches):
    model, x = _model(), torch.randn(3, 3, 32, 32)
    with loupe.explainer(model, "cam", target_layer="layer4") as batch:
        maps = [batch(x, [1, 2, 3]), batch(x[:2], None)]
    assert searches == []  # found from the modules when the block started
    # the block's forwards go through a frozen copy (loupe._frozen_layer): float rounding
    _assert_same(maps[0], loupe.explain(model, x, [1, 2, 3], method="cam", target_layer="layer4"))
    _assert_same(maps[1], loupe.explain(model, x[:2], method="cam", target_layer="layer4"))
    assert searches == ["fc", "fc"]  # explain searches on every call


def test_a_replaced_head_is_found_again(searches):
    model, x = _model(), torch.randn(2, 3, 32, 32)
    with loupe.explainer(model, "cam", target_layer="layer4") as batch:
        batch(x, 1)
        model.fc = nn.Linear(512, 7)  # new weights: the kept head no longer reproduces them
        maps = batch(x, 1)
    assert searches == ["fc"]
    torch.testing.assert_close(maps, loupe.explain(model, x, 1, method="cam",
                                                   target_layer="layer4"))


class AuxAfterHead(nn.Module):
    """A classifier whose last ``nn.Linear`` in module order is an auxiliary one of another
    width: the guess from the modules does not fit the logits, the per-call search does."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.aux = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def test_a_guess_that_does_not_fit_is_searched_for(searches):
    torch.manual_seed(0)
    model, x = AuxAfterHead().eval(), torch.randn(2, 3, 8, 8)
    with loupe.explainer(model, "cam", target_layer="features") as batch:
        maps = batch(x, [0, 2])
    assert searches == ["fc"]
    _assert_same(maps, loupe.explain(model, x, [0, 2], method="cam", target_layer="features"))


def test_every_call_is_still_checked():
    torch.manual_seed(0)
    model = ShiftedLogit(shift=50.0).eval()
    x = torch.rand(2, 3, 8, 8) + 1.0
    with loupe.explainer(model, "cam", target_layer="features", upsample=False) as batch:
        assert batch(x, [0, 2]).shape == (2, 1, 8, 8)
        with pytest.raises(HeadError, match="does not reproduce ShiftedLogit's logits"):
            batch(x, 1)
        assert batch(x, [[0, -1], [2, 2]])[0, 1].abs().max() == 0
    assert count_hooks(model) == 0


def test_the_layer_is_found_on_the_first_call():
    model, x = _model(), torch.randn(2, 3, 64, 64)
    with loupe.explainer(model, "cam") as batch:
        assert count_hooks(model) == 0
        maps = batch(x, 3)
        assert count_hooks(model) == 1
    assert count_hooks(model) == 0
    _assert_same(maps, loupe.explain(model, x, 3, method="cam"))


@pytest.mark.parametrize(("method", "options", "message"), [
    ("no-such-method", {}, "unknown method 'no-such-method'"),
    ("cam", {"heads": "fc"}, "method 'cam' has no option 'heads'"),
    ("cam", {"head": "nowhere"}, "layer 'nowhere' does not exist in ResNet"),
])
def test_a_bad_method_or_option_fails_when_the_block_starts(method, options, message):
    model = _model()
    with pytest.raises(ValueError, match=message), \
            loupe.explainer(model, method, target_layer="layer4", **options):
        pytest.fail("the block must not start")
    assert count_hooks(model) == 0 and not model.training
