"""``loupe._frozen_layer``: CAM's one forward (and EigenCAM's, KPCA-CAM's, RandomCAM's) through a
frozen TorchScript copy that also returns the target layer's output, in explainer blocks and
for calls of at least ``FROZEN_MIN_ROWS`` images, only where it computes what the model does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import loupe
from loupe import _frozen_layer
from loupe._frozen import FROZEN_ENV, FROZEN_MIN_ROWS
from loupe._frozen_layer import OPTIMIZE_MIN_PIXELS, layer_inference_forward
from loupe.hooks import hooked
from loupe.models import random_model
from tests.methods.test_cam import TinyDenseNet
from tests.test_frozen import _convnet, _x

LAYER = "4"  # the second BatchNorm: its output feeds ReLU -> GAP -> linear
SHAPE = ((3, 12, 12), torch.float32)


def _known(model: nn.Module, optimized: bool = False):
    return _frozen_layer._COPIES[model][(LAYER, optimized)]


def _reference(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with hooked(model, [LAYER], leaf=False, freeze=False) as captured, torch.no_grad():
        output = model(x)
    return captured[LAYER], output


def _assert_computes_the_model(forward, model: nn.Module, x: torch.Tensor) -> None:
    activation, output = forward(x)
    expected = _reference(model, x)
    torch.testing.assert_close(activation, expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output, expected[1], rtol=1e-5, atol=1e-6)


def test_in_a_block_the_copy_returns_the_layer_and_the_output_and_is_kept():
    model, x = _convnet(), _x()
    with torch.inference_mode():
        forward = layer_inference_forward(model, LAYER, x, repeated=True)
        assert forward is not None
        _assert_computes_the_model(forward, model, x)
        _assert_computes_the_model(forward, model, x[:1])
        first = _known(model).module
        assert first is not None and _known(model).shapes == {SHAPE: True}
        assert layer_inference_forward(model, LAYER, x[:1], repeated=True) is not None
        assert _known(model).module is first  # kept
        # a single call of few rows runs the model, even when a copy exists
        assert layer_inference_forward(model, LAYER, x, repeated=False) is None


def test_a_call_of_many_rows_gets_the_optimised_copy_outside_a_block():
    model, x = _convnet(), _x(FROZEN_MIN_ROWS)
    with torch.inference_mode():
        forward = layer_inference_forward(model, LAYER, x, repeated=False)
        assert forward is not None and _known(model, optimized=True).module is not None
        assert (LAYER, False) not in _frozen_layer._COPIES[model]
        _assert_computes_the_model(forward, model, x)


def test_a_block_call_of_many_pixels_gets_the_optimised_copy():
    model = _convnet()
    side = int(OPTIMIZE_MIN_PIXELS**0.5) + 1  # one image just over the threshold
    with torch.inference_mode():
        assert layer_inference_forward(model, LAYER, _x(1, side), repeated=True) is not None
        assert set(_frozen_layer._COPIES[model]) == {(LAYER, True)}
        assert layer_inference_forward(model, LAYER, _x(1, side - 2), repeated=True) is not None
        assert set(_frozen_layer._COPIES[model]) == {(LAYER, True), (LAYER, False)}


def test_a_changed_parameter_makes_a_new_copy_that_follows_it():
    model, x = _convnet(), _x()
    with torch.inference_mode():
        first = layer_inference_forward(model, LAYER, x, repeated=True)
    with torch.no_grad():
        model[3].weight.mul_(2.0)  # in place, as an optimiser step
    with torch.inference_mode():
        second = layer_inference_forward(model, LAYER, x, repeated=True)
        _assert_computes_the_model(second, model, x)
        assert not torch.allclose(first(x)[1], second(x)[1], rtol=1e-3, atol=1e-4)


def test_the_model_runs_where_the_copy_would_not_compute_what_it_computes(monkeypatch):
    x = _x()
    with torch.inference_mode():
        model = _convnet()
        model.train()
        assert layer_inference_forward(model, LAYER, x, repeated=True) is None  # batch stats
        model.eval()
        handle = model[5].register_forward_hook(lambda m, i, o: o * 2)
        assert layer_inference_forward(model, LAYER, x, repeated=True) is None  # user's hook
        handle.remove()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer_inference_forward(model, LAYER, x, repeated=True) is None
        assert layer_inference_forward(model, LAYER, x.to("meta"), repeated=True) is None
        monkeypatch.setenv(FROZEN_ENV, "0")
        assert layer_inference_forward(model, LAYER, x, repeated=True) is None
    monkeypatch.delenv(FROZEN_ENV)
    assert layer_inference_forward(model, LAYER, x, repeated=True) is None  # gradients on


class _BlockAndHead(nn.Module):
    """A conv + BatchNorm block and a linear head; the subclasses' forwards use them."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))
        self.fc = nn.Linear(3, 2)


class _LayerTwice(_BlockAndHead):
    """The same block called twice: which call's output would be "the layer's"?"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.block(x)).mean((2, 3)))


class _Untraceable(_BlockAndHead):
    """Control flow on a tensor's value: ``torch.fx`` cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.block(x)
        if features.sum() > 0:
            features = features * 2
        return self.fc(features.mean((2, 3)))


@pytest.mark.parametrize("model", [_LayerTwice(), _Untraceable()],
                         ids=["layer called twice", "untraceable"])
def test_no_copy_of_a_model_it_cannot_copy_and_no_second_try(model, monkeypatch):
    model = model.eval()
    with torch.inference_mode():
        assert layer_inference_forward(model, "block", _x(), repeated=True) is None
        assert _frozen_layer._COPIES[model][("block", False)].module is None
        monkeypatch.setattr(_frozen_layer, "_frozen_with_layer",
                            lambda *a: pytest.fail("tried again"))
        assert layer_inference_forward(model, "block", _x(), repeated=True) is None


@pytest.mark.parametrize("which", [0, 1], ids=["layer output", "model output"])
def test_a_copy_that_disagrees_on_a_shape_is_not_used_on_it(which):
    model, x = _convnet(), _x()
    with torch.inference_mode():
        layer_inference_forward(model, LAYER, x, repeated=True)
        known = _known(model)
        copy = known.module

        class Off(nn.Module):
            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                outputs = list(copy(x))
                outputs[which] = outputs[which] * 1.01
                return tuple(outputs)

        known.module = Off()
        bigger = _x(size=16)  # a shape not checked yet
        assert layer_inference_forward(model, LAYER, bigger, repeated=True) is None
        assert known.shapes[((3, 16, 16), torch.float32)] is False
        assert known.shapes[SHAPE] is True  # checked before the copy went wrong


def test_a_copy_that_raises_gives_way_to_the_model_from_then_on():
    model, x = _convnet(), _x()
    with torch.inference_mode():
        layer_inference_forward(model, LAYER, x, repeated=True)

        class Broken(nn.Module):
            def forward(self, _x: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("mkldnn says no")

        _known(model).module = Broken()
        forward = layer_inference_forward(model, LAYER, x, repeated=True)
        assert forward(x) is None
        assert _known(model).shapes[SHAPE] is False
        assert layer_inference_forward(model, LAYER, x, repeated=True) is None


class _InPlaceAfterLayer(TinyDenseNet):
    """DenseNet's own pattern: ``F.relu(features, inplace=True)`` right after the target layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.relu(self.features(x), inplace=True)
        return self.classifier(out.mean((2, 3)))


@pytest.mark.parametrize("method", ["cam", "eigencam", "randomcam", "kpcacam"])
@pytest.mark.parametrize("case", ["resnet", "in-place after the layer"])
def test_a_blocks_maps_are_explains_to_float_rounding(method, case):
    torch.manual_seed(0)
    if case == "resnet":
        model, layer = random_model("resnet18", num_classes=6, seed=0), "layer4"
        x = torch.randn(2, 3, 48, 48)
    else:
        model, layer, x = _InPlaceAfterLayer().eval(), "features", torch.randn(2, 3, 10, 10)
    expected = loupe.explain(model, x, [1, 2], method, target_layer=layer)
    assert _frozen_layer._COPIES.get(model) is None  # one call of two images: no copy
    with loupe.explainer(model, method, target_layer=layer) as batch:
        got = [batch(x, [1, 2]), batch(x, [1, 2])]
    assert _frozen_layer._COPIES[model][(layer, False)].shapes == {(tuple(x.shape[1:]),
                                                                     torch.float32): True}
    for maps in got:
        torch.testing.assert_close(maps, expected, rtol=1e-4,
                                   atol=1e-5 * float(expected.abs().max()))
