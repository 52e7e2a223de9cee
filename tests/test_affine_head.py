"""``loupe._affine_head``: the gradient-weighted CAMs' forward through the frozen copy, the layer's
output as a leaf and the model's own head after it with autograd, only where that head is affine
in the layer's output (so its gradients cannot depend on the copy's rounding)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import loupe
from loupe import _affine_head
from loupe._affine_head import affine_head, layer_head_forward
from loupe._frozen import FROZEN_ENV
from loupe.hooks import hooked
from loupe.models import random_model
from tests.test_frozen import _convnet, _x

AFFINE_LAYER = "5"  # the last ReLU: GAP -> flatten -> linear after it
GRADCAM_FAMILY = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam",
                  "gradcam-elementwise", "eigengradcam", "finercam"]


def _model_leaf_and_output(model: nn.Module, layer: str, x: torch.Tensor):
    with hooked(model, [layer]) as captured, torch.enable_grad():
        output = model(x)
        return captured[layer], output


def test_the_head_after_an_affine_tail_is_the_models_and_calls_its_modules():
    model, x = _convnet(), _x()
    head = affine_head(model, AFFINE_LAYER)
    assert head is not None
    assert head.get_submodule("8") is model[8]  # the model's own linear layer, not a copy
    leaf, output = _model_leaf_and_output(model, AFFINE_LAYER, x)
    torch.testing.assert_close(head(leaf.detach()), output.detach())


class _AddsInputAfterLayer(nn.Module):
    """Affine ops after the layer, but the output also reads the input directly."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _convnet()[:6]
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3))) + x.mean()


@pytest.mark.parametrize("case", ["ReLU after the layer", "an inner layer", "VGG classifier",
                                  "reads the input", "layer called twice"])
def test_no_head_where_the_rest_is_not_affine_in_the_layer_alone(case):
    model, layer = {
        "ReLU after the layer": (_convnet(), "4"),
        "an inner layer": (random_model("resnet18", num_classes=3, seed=0), "layer3"),
        "VGG classifier": (random_model("vgg11", num_classes=3, seed=0), "features"),
        "reads the input": (_AddsInputAfterLayer().eval(), "body"),
        "layer called twice": (nn.Sequential(*[_convnet()[:3]] * 2).eval(), "0"),
    }[case]
    assert affine_head(model, layer) is None
    assert _affine_head._HEADS[model][layer] is None  # not tried again


def test_a_replaced_module_makes_a_new_head():
    model = _convnet()
    first = affine_head(model, AFFINE_LAYER)
    assert affine_head(model, AFFINE_LAYER) is first  # kept
    model[8] = nn.Linear(8, 5)
    second = affine_head(model, AFFINE_LAYER)
    assert second is not first and second.get_submodule("8") is model[8]


def test_the_leaf_forward_gives_the_models_gradients_at_the_layer():
    model, x = _convnet(), _x()
    forward = layer_head_forward(model, AFFINE_LAYER, x, repeated=True)
    assert forward is not None
    leaf, output = forward(x)
    assert leaf.requires_grad and leaf.is_leaf
    (got,) = torch.autograd.grad(output[:, 1].sum(), leaf)
    ref_leaf, ref_output = _model_leaf_and_output(model, AFFINE_LAYER, x)
    (expected,) = torch.autograd.grad(ref_output[:, 1].sum(), ref_leaf)
    torch.testing.assert_close(leaf.detach(), ref_leaf.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_the_model_runs_outside_a_block_and_when_turned_off(monkeypatch):
    model, x = _convnet(), _x()
    assert layer_head_forward(model, AFFINE_LAYER, x, repeated=False) is None  # 4 rows
    monkeypatch.setenv(FROZEN_ENV, "0")
    assert layer_head_forward(model, AFFINE_LAYER, x, repeated=True) is None


@pytest.mark.parametrize("method", GRADCAM_FAMILY)
def test_a_blocks_maps_are_explains_to_float_rounding(method, monkeypatch):
    model = random_model("resnet18", num_classes=6, seed=0)
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    expected = loupe.explain(model, x, [1, 2], method, target_layer="layer4")
    assert _affine_head._HEADS.get(model) is None  # one call of two images: the model ran
    taken = []
    real = _affine_head.layer_head_forward

    def counted(*args, **kwargs):
        forward = real(*args, **kwargs)
        taken.append(forward is not None)
        return forward

    monkeypatch.setattr("loupe.context.layer_head_forward", counted)
    with loupe.explainer(model, method, target_layer="layer4") as batch:
        got = [batch(x, [1, 2]), batch(x[:1], [1])]
    assert taken and all(taken)  # every forward of the block went through the copy
    scale = float(expected.abs().max())
    torch.testing.assert_close(got[0], expected, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(got[1], expected[:1], rtol=1e-4, atol=1e-5 * scale)
