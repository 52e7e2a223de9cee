"""``loupe._frozen.inference_forward``: a frozen TorchScript copy of the model for no-grad
passes on the CPU, only where it computes what the model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import loupe
from loupe import _frozen
from loupe._frozen import FROZEN_ENV, FROZEN_MIN_ROWS, inference_forward
from loupe.hooks import hooked
from loupe.metrics.deletion import deletion_curves
from loupe.models import random_model

ROWS = FROZEN_MIN_ROWS


def _convnet(seed: int = 0) -> nn.Module:
    """conv -> BN -> ReLU -> conv -> BN -> ReLU -> GAP -> linear, BN statistics not trivial."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def _x(n: int = 4, size: int = 12) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _is_frozen(forward: object, model: nn.Module) -> bool:
    return forward is not model and _frozen._COPIES[model].module is not None


def test_the_frozen_copy_computes_the_models_outputs_and_is_kept():
    model, x = _convnet(), _x()
    with torch.no_grad():
        forward = inference_forward(model, x, ROWS)
        assert _is_frozen(forward, model)
        torch.testing.assert_close(forward(x), model(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(forward(x[:1]), model(x[:1]), rtol=1e-5, atol=1e-6)
        first = _frozen._COPIES[model].module
        again = inference_forward(model, x[:1], ROWS)
        assert _is_frozen(again, model) and _frozen._COPIES[model].module is first  # kept
        # a call with few rows takes the model even when a copy exists: the way a call takes
        # never depends on earlier calls
        assert inference_forward(model, x, ROWS - 1) is model
        # ... unless the call is an explainer block's, which pays for freezing once
        assert _is_frozen(inference_forward(model, x, ROWS - 1, repeated=True), model)


def test_a_changed_parameter_makes_a_new_copy_that_follows_it():
    model, x = _convnet(), _x()
    with torch.no_grad():
        first = inference_forward(model, x, ROWS)
        model[0].weight.mul_(2.0)  # in place, as an optimiser step
        second = inference_forward(model, x, ROWS)
        assert _is_frozen(second, model)
        torch.testing.assert_close(second(x), model(x), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(first(x), model(x), rtol=1e-3, atol=1e-4)


def test_the_model_itself_where_the_copy_would_not_be_exact_or_would_not_pay():
    x = _x()
    with torch.no_grad():
        model = _convnet()
        assert inference_forward(model, x, ROWS - 1) is model  # too few rows to pay off
        assert _frozen._COPIES.get(model) is None
        model.train()
        assert inference_forward(model, x, ROWS) is model  # batch statistics
        model.eval()
        handle = model[2].register_forward_hook(lambda m, i, o: o * 2)
        assert inference_forward(model, x, ROWS) is model  # a user's hook would be skipped
        handle.remove()
        pre = model[0].register_forward_pre_hook(lambda m, i: None)
        assert inference_forward(model, x, ROWS) is model
        pre.remove()
    assert inference_forward(model, x, ROWS) is model  # gradients on


def test_the_environment_variable_turns_it_off(monkeypatch):
    model, x = _convnet(), _x()
    monkeypatch.setenv(FROZEN_ENV, "0")
    with torch.no_grad():
        assert inference_forward(model, x, ROWS) is model


def test_loupes_own_capturing_hooks_do_not_prevent_it():
    model, x = _convnet(), _x()
    with hooked(model, ["3"]) as captured, torch.no_grad():
        forward = inference_forward(model, x, ROWS)
        assert _is_frozen(forward, model)
        model(x[:1])
        assert captured["3"].shape == (1, 8, 6, 6)
    with hooked(model, [], edit={"3": lambda a: a * 0}), torch.no_grad():
        _frozen._COPIES.pop(model)
        assert inference_forward(model, x, ROWS) is model  # an editing hook changes outputs


class _Unscriptable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)  # a model without one is not tried at all
        self.linear = nn.Linear(3, 2)

    def forward(self, x, **options):  # **kwargs: TorchScript cannot compile it
        return self.linear(self.norm(x).mean((2, 3)))


class _DifferentWhenScripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)  # a model without one is not tried at all
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.linear(self.norm(x).mean((2, 3))) * 2
        return self.linear(self.norm(x).mean((2, 3)))


def test_a_model_that_cannot_be_scripted_runs_itself_and_is_not_tried_again(monkeypatch):
    model, x = _Unscriptable().eval(), _x()
    with torch.no_grad():
        assert inference_forward(model, x, ROWS) is model
        assert _frozen._COPIES[model].module is None
        monkeypatch.setattr(_frozen, "_frozen", lambda m: pytest.fail("tried again"))
        assert inference_forward(model, x, ROWS) is model


def test_a_copy_that_disagrees_on_a_shape_is_not_used_on_it():
    model, x = _DifferentWhenScripted().eval(), _x()
    with torch.no_grad():
        assert inference_forward(model, x, ROWS) is model
        assert _frozen._COPIES[model].shapes == {((3, 12, 12), torch.float32): False}
        assert inference_forward(model, x, ROWS) is model


def test_a_copy_that_raises_on_a_shape_hands_it_to_the_model_from_then_on():
    model, x = _convnet(), _x()
    with torch.no_grad():
        inference_forward(model, x, ROWS)
        known = _frozen._COPIES[model]

        class Broken(nn.Module):
            def forward(self, _x: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("mkldnn says no")

        known.module = Broken()
        forward = inference_forward(model, x, ROWS)
        torch.testing.assert_close(forward(x), model(x))
        assert known.shapes[((3, 12, 12), torch.float32)] is False
        assert inference_forward(model, x, ROWS) is model


class _DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _convnet()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


def test_a_model_whose_output_is_no_tensor_is_not_frozen(monkeypatch):
    model = _DictOutput().eval()
    monkeypatch.setattr(_frozen, "_frozen", lambda m: pytest.fail("frozen"))
    with torch.no_grad():
        assert inference_forward(model, _x(), ROWS) is model
        assert _frozen._COPIES[model].module is None


def test_not_for_a_model_without_batchnorm(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    with torch.no_grad():
        model(_x())
        monkeypatch.setattr(_frozen, "_frozen", lambda m: pytest.fail("tried"))
        assert inference_forward(model.eval(), _x(), ROWS) is model


def test_not_for_a_model_made_under_inference_mode():
    with torch.inference_mode():
        model = _convnet()  # inference tensors keep no version counter
    with torch.no_grad():
        assert inference_forward(model, _x(), ROWS) is model


def test_not_off_the_cpu():
    model = _convnet()
    with torch.no_grad():
        assert inference_forward(model, _x().to("meta"), ROWS) is model


def test_scorecam_and_deletion_give_the_same_numbers_with_and_without_it(monkeypatch):
    model = random_model("resnet18", num_classes=10, seed=0)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([3, 7])
    maps = None

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        scorecam = loupe.explain(model, x, classes, method="scorecam", target_layer="layer4",
                                 chunk_size=32)
        # the same maps for both runs: maps equal to float rounding may still order tied
        # pixels differently
        curves = deletion_curves(model, x, scorecam if maps is None else maps, classes,
                                 steps=40)
        return scorecam, curves.scores

    frozen = run()
    maps = frozen[0]
    assert _frozen._COPIES[model].module is not None  # 2 x 512 masked copies: it was used
    monkeypatch.setenv(FROZEN_ENV, "0")
    plain = run()
    for a, b in zip(frozen, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_occlusion_in_a_block_takes_the_copy_and_gives_explains_maps(monkeypatch):
    model = random_model("resnet18", num_classes=10, seed=0)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    expected = loupe.explain(model, x, [3], method="occlusion")  # 49 windows: the model runs
    assert _frozen._COPIES.get(model) is None
    with loupe.explainer(model, "occlusion") as batch:
        got = batch(x, [3])
    assert _frozen._COPIES[model].module is not None
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
