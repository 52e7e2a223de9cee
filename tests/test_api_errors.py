"""``explain``'s user-facing errors: each is a ValueError whose message says what is wrong."""

from __future__ import annotations

import pytest
import torch

import loupe
from loupe import explain, list_methods
from tests.conftest import count_hooks
from tests.test_registry import FAST, model_for, tiny_resnet


@pytest.fixture(scope="module")
def model():
    return tiny_resnet()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _raises(message: str, *args, **kwargs) -> ValueError:
    with pytest.raises(ValueError) as error:
        explain(*args, **kwargs)
    assert message in str(error.value), str(error.value)
    return error.value


@pytest.mark.parametrize("method", list_methods())
def test_target_class_out_of_range(model, images, method):
    # Every method that runs the model checks the classes against its number of outputs;
    # a model-free method (a baseline) cannot, and must then not have called the model.
    model.calls = 0
    try:
        explain(model_for(method, model), images, [[3, 10], [2, 1]], method=method,
                **FAST.get(method, {}))
    except ValueError as error:
        assert str(error) == (
            "target class 10 is out of range for a model with 10 outputs (valid: 0..9)"
        )
    else:
        assert model.calls == 0, f"{method} ran the model and accepted class 10 of 10"
    assert count_hooks(model) == 0


def test_negative_target_class(model, images):
    _raises("target classes must be >= 0 (or -1 for padding), got -2",
            model, images, [[3, -2], [2, 1]], method="saliency")


def test_layer_that_does_not_exist(model, images):
    error = _raises("layer 'layer9' does not exist in TinyResNet; did you mean ",
                    model, images, 3, method="gradcam", target_layer="layer9")
    assert "'layer1'" in str(error)
    assert count_hooks(model) == 0


def test_target_layer_for_a_method_without_one(model, images):
    _raises("method 'saliency' does not use a target layer",
            model, images, 3, method="saliency", target_layer="layer4")


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (torch.zeros(3, 16, 16), "(3, 16, 16)"),
        (torch.zeros(1, 2, 3, 16, 16), "(1, 2, 3, 16, 16)"),
        ([[0.0]], "list"),
    ],
)
def test_images_that_are_not_4d(model, bad, shown):
    _raises(f"images must be a 4D tensor (B, C, H, W), got {shown}",
            model, bad, 3, method="saliency")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_images_that_are_not_floating_point(model, images, dtype):
    _raises(f"images must be floating point, got {dtype}",
            model, images.to(dtype), 3, method="saliency")


@pytest.mark.parametrize("method", ["saliency", "cam"])
def test_an_empty_batch(model, images, method):
    _raises("images must hold at least one image, got a batch of 0",
            model, images[:0], None, method=method)
    with pytest.raises(ValueError, match="at least one image"), \
            loupe.explainer(model, method) as explain_batch:
        explain_batch(images[:0])
    assert count_hooks(model) == 0


def test_unknown_method(model, images):
    error = _raises("unknown method 'gradcan'; choose one of: ", model, images, 3,
                    method="gradcan")
    for name in list_methods():
        assert name in str(error)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([1, 2, 3], "targets give 3 rows for 2 images; give one class (or one list of classes) "
                    "per image"),
        ([[1, 2]], "targets give 1 rows for 2 images"),
        (torch.tensor([[1], [2], [3]]), "targets give 3 rows for 2 images"),
        (torch.zeros(2, 1, 1, dtype=torch.long), "a targets tensor must hold integer classes, "
                                                 "shape (B,) or (B, K); got torch.int64 of "
                                                 "shape (2, 1, 1)"),
        (torch.tensor([1.5, 2.0]), "a targets tensor must hold integer classes"),
        ([[1], []], None),  # ragged lists are fine (padded with -1); see below
        ([[], []], "every image needs at least one target class"),
        ("cat", "targets must be None, an int, a list of ints, a list of lists, a (B, K) "
                "tensor, or score functions; got str"),
    ],
)
def test_targets_of_the_wrong_shape(model, images, targets, message):
    if message is None:
        maps = explain(model, images, targets, method="saliency")
        assert maps.shape == (2, 1, 16, 16) and torch.count_nonzero(maps[1]) == 0
        return
    _raises(message, model, images, targets, method="saliency")


def test_unknown_method_option(model, images):
    _raises("method 'smoothgrad' has no option 'n_sample'; its options are: n_samples, ",
            model, images, 3, method="smoothgrad", n_sample=4)
    _raises("method 'saliency' has no option 'steps'; its options are: reduce",
            model, images, 3, method="saliency", steps=4)


def test_errors_leave_the_model_as_it_was(model, images):
    model.train()
    try:
        for kwargs in ({"targets": [[3, 10], [2, 1]]}, {"targets": [1, 2, 3]}):
            with pytest.raises(ValueError):
                explain(model, images, method="gradcam", **kwargs)
            assert model.training and count_hooks(model) == 0
            assert all(p.requires_grad for p in model.parameters())
    finally:
        model.eval()
