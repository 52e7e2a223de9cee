"""CAM's per-call head check: it compares the explained classes' logits, and finds the final
linear layer in ``named_modules()`` order without walking the backbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import convnext_tiny, mobilenet_v2, resnet18, vit_b_16

from loupe import explain
from loupe.methods.heads import HeadError, _final_linear_name, find_cam_head
from tests.conftest import count_hooks


class ShiftedLogit(nn.Module):
    """GAP + linear, except that logit 1 gets an extra ``shift * x.mean()`` that no map of
    the features explains: CAM's premise holds for classes 0 and 2 only."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.pool(self.features(x)).flatten(1))
        extra = torch.zeros_like(logits)
        extra[:, 1] = self.shift * x.mean((1, 2, 3))
        return logits + extra


def test_the_check_is_on_the_explained_classes_logits():
    torch.manual_seed(0)
    model = ShiftedLogit(shift=50.0).eval()
    x = torch.rand(2, 3, 8, 8) + 1.0  # mean >= 1: logit 1 is off by >= 50
    maps = explain(model, x, [0, 2], method="cam", upsample=False)
    features = model.features(x).detach()
    # the premise the maps need: the map's spatial mean is the logit minus the bias
    logits = model(x).detach()
    bias = model.fc.bias.detach()
    for row, k in enumerate([0, 2]):
        assert maps[row, 0].mean() == pytest.approx(float(logits[row, k] - bias[k]), rel=1e-5)
    with pytest.raises(HeadError, match="does not reproduce ShiftedLogit's logits"):
        explain(model, x, 1, method="cam")
    with pytest.raises(HeadError, match="does not reproduce"):  # every logit: class 1 too
        find_cam_head(model, features, logits)
    assert find_cam_head(model, features, logits, classes=torch.tensor([[0], [2]])).name == "fc"
    # padding (-1) and repeated classes are fine
    maps = explain(model, x, [[0, -1], [2, 2]], method="cam", upsample=False)
    assert maps[0, 1].abs().max() == 0 and torch.equal(maps[1, 0], maps[1, 1])
    # more targets than logits (the check reads each column once): the same maps
    many = explain(model, x, [[0, 2, 0, 2], [2, 0, 2, 0]], method="cam", upsample=False)
    torch.testing.assert_close(many[:, 0], maps[:, 0])
    assert count_hooks(model) == 0


class Nested(nn.Module):
    """The last ``Linear`` with 5 outputs sits inside an earlier child; the last child has a
    Linear with another width; the root has one before both."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(2, 5)
        self.body = nn.Sequential(nn.Linear(5, 5), nn.Sequential(nn.ReLU(), nn.Linear(5, 5)))
        self.tail = nn.Sequential(nn.Linear(5, 7), nn.Identity())


def _last_by_walk(model: nn.Module, num_logits: int) -> str | None:
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module.out_features == num_logits]
    return names[-1] if names else None


@pytest.mark.parametrize("build", [resnet18, mobilenet_v2, convnext_tiny, vit_b_16, Nested],
                         ids=lambda b: b.__name__)
def test_the_final_linear_layer_is_the_last_in_module_order(build):
    model = build()
    for width in (1000, 5, 7, 768, 3):
        assert _final_linear_name(model, width) == _last_by_walk(model, width)
    if build is Nested:
        assert _final_linear_name(model, 5) == "body.1.1"
        assert _final_linear_name(model, 3) is None
