"""``loupe._frozen_grad``: the input-gradient passes of an explainer block through a frozen
TorchScript copy that keeps the model's numerics (no BatchNorm folding), used only where its
output is the model's bit for bit, so maps are ``explain``'s exactly."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import loupe
from loupe import _frozen_grad
from loupe._frozen import FROZEN_ENV
from loupe._frozen_grad import gradient_copy, gradient_forward
from loupe.hooks import hooked
from loupe.models import random_model
from tests.test_frozen import _convnet, _x

SHAPE = ((3, 12, 12), torch.float32)


def _input_gradient(forward, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.detach().requires_grad_(True)
    output = forward(leaf)
    (grad,) = torch.autograd.grad(output[:, 2].sum(), leaf)
    return output.detach(), grad


def test_the_copy_gives_the_models_outputs_and_input_gradients_bit_for_bit():
    model, x = _convnet().requires_grad_(False), _x()
    copied = gradient_copy(model, x)
    assert copied is not None and _frozen_grad._COPIES[model].shapes == {SHAPE: True}
    for rows in (x, x[:1]):
        got, expected = _input_gradient(copied, rows), _input_gradient(model, rows)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    first = _frozen_grad._COPIES[model].module
    assert gradient_copy(model, x[:1]) is not None and _frozen_grad._COPIES[model].module is first


def test_outside_a_block_the_model_runs():
    model = _convnet()
    assert gradient_forward(model, repeated=False) is model
    assert gradient_forward(model, repeated=True) is not model


def test_a_model_without_batchnorm_gets_one_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    assert gradient_copy(model, _x()) is not None


def test_a_changed_parameter_makes_a_new_copy_that_follows_it():
    model, x = _convnet().requires_grad_(False), _x()
    first = gradient_copy(model, x)
    model[0].weight.mul_(2.0)
    second = gradient_copy(model, x)
    assert torch.equal(second(x), model(x)) and not torch.allclose(first(x), model(x))


@pytest.mark.parametrize("case", ["capturing hook", "user hook", "training", "turned off",
                                  "autocast", "no tensor output"])
def test_the_model_runs_where_the_copy_might_not_compute_what_it_computes(case, monkeypatch):
    model, x = _convnet(), _x()
    if case == "capturing hook":  # with gradients on, loupe's capture cuts the graph
        with hooked(model, ["4"]):
            assert gradient_copy(model, x) is None
        return
    if case == "user hook":
        model[2].register_forward_hook(lambda m, i, o: o * 2)
    elif case == "training":
        model.train()
    elif case == "turned off":
        monkeypatch.setenv(FROZEN_ENV, "0")
    elif case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert gradient_copy(model, x) is None
        return
    else:
        model = nn.Sequential(model, _ToDict()).eval()
    assert gradient_copy(model, x) is None


class _ToDict(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": x}


def test_a_copy_that_is_not_bit_for_bit_the_model_on_a_shape_is_not_used(monkeypatch):
    model, x = _convnet(), _x()

    def nudged(m: nn.Module) -> torch.jit.ScriptModule:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation warnings
            return torch.jit.freeze(torch.jit.script(_nudged(m)))  # outputs off by 1e-3

    monkeypatch.setattr(_frozen_grad, "_frozen_keeping_numerics", nudged)
    assert gradient_copy(model, x) is None
    assert _frozen_grad._COPIES[model].shapes == {SHAPE: False}


def _nudged(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone[8].bias.add_(1e-3)
    return clone


@pytest.mark.parametrize(("method", "options"), [
    ("saliency", {}), ("gradxinput", {}), ("smoothgrad", {"n_samples": 6}),
    ("integrated-gradients", {"steps": 6}), ("shuffle", {"n_shuffles": 3}),
])
def test_a_blocks_maps_are_explains_bit_for_bit(method, options, monkeypatch):
    model = random_model("resnet18", num_classes=6, seed=0)
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    expected = loupe.explain(model, x, [1, 2], method, **options)
    assert _frozen_grad._COPIES.get(model) is None  # outside a block: the model ran
    used = []
    real = _frozen_grad.gradient_copy

    def counted(*args):
        copied = real(*args)
        used.append(copied is not None)
        return copied

    monkeypatch.setattr(_frozen_grad, "gradient_copy", counted)
    with loupe.explainer(model, method, **options) as batch:
        got = batch(x, [1, 2])
    assert used and all(used)
    assert torch.equal(got, expected)
