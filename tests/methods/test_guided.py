"""Guided Backpropagation and Guided Grad-CAM against captum and pytorch-grad-cam, by hand on
tiny models (ReLU6), and the models that module hooks cannot guide (functional ReLUs)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, GuidedGradCam, Saliency
from pytorch_grad_cam import GuidedBackpropReLUModel
from torch import nn
from torchvision.models import densenet121, mobilenet_v2, resnet18

from loupe import explain
from loupe.methods.guided import guided_gradients, unguided_relus
from loupe.targets import resolve_targets
from tests.conftest import count_hooks

TARGETS = [[3, 7], [5, 1]]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # captum's hook warnings


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def close(ours: torch.Tensor, peer: torch.Tensor, rtol: float = 1e-4) -> None:
    assert ours.shape == peer.shape
    scale = peer.abs().amax()
    assert scale > 0
    error = (ours - peer).abs().amax()
    assert error <= rtol * scale, f"relative error {float(error / scale):.3g}"


def attributions(model: nn.Module, images: torch.Tensor, targets=TARGETS, **options):
    """loupe's per-channel guided attributions ``(B, K, C, H, W)``."""
    guided, _ = guided_gradients(model, images, resolve_targets(targets, len(images), "cpu"),
                                 **options)
    return guided.transpose(0, 1)


def captum_columns(attribute, images: torch.Tensor, **kwargs) -> torch.Tensor:
    """``(B, K, C, H, W)``: one captum call per target column."""
    columns = [attribute(images.clone(), target=[row[k] for row in TARGETS], **kwargs)
               for k in range(len(TARGETS[0]))]
    return torch.stack(columns, dim=1).detach()


@pytest.fixture(scope="module")
def captum_guided(model, images) -> torch.Tensor:
    return captum_columns(GuidedBackprop(model).attribute, images)


def test_guided_backprop_matches_captum(model, images, captum_guided):
    close(attributions(model, images), captum_guided)
    # the registered method is the channel reduction of the same attributions
    maps = explain(model, images, TARGETS, method="guided-backprop")
    close(maps, captum_guided.abs().amax(2))
    summed = explain(model, images, TARGETS, method="guided-backprop", reduce="sum")
    close(summed, captum_guided.sum(2))
    assert count_hooks(model) == 0


def test_guided_backprop_is_not_the_plain_gradient(model, images, captum_guided):
    plain = captum_columns(Saliency(model).attribute, images, abs=False)
    error = (plain - captum_guided).abs().amax() / captum_guided.abs().amax()
    assert error > 0.1


def test_guided_backprop_matches_pytorch_grad_cam(model, images):
    ours = attributions(model, images)
    for b, row in enumerate(TARGETS):
        for k, target in enumerate(row):
            peer_model = GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")
            peer = peer_model(images[b : b + 1].clone(), target_category=target)  # (H, W, C)
            close(ours[b, k], torch.from_numpy(np.ascontiguousarray(peer)).permute(2, 0, 1))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_guided_gradcam_matches_captum(model, images, interpolation):
    peer = captum_columns(GuidedGradCam(model, model.layer4).attribute, images,
                          interpolate_mode=interpolation)
    ours = explain(model, images, TARGETS, method="guided-gradcam", target_layer="layer4",
                   interpolation=interpolation, reduce="sum")
    close(ours, peer.sum(2))
    assert count_hooks(model) == 0


def test_guided_gradcam_interpolation_and_layer_matter(model, images):
    """Bilinear (the paper) and nearest (captum's default) upsampling give different maps, and
    the default layer is layer4, so the comparisons above can fail."""
    bilinear = explain(model, images, TARGETS, method="guided-gradcam")
    nearest = explain(model, images, TARGETS, method="guided-gradcam", interpolation="nearest")
    assert (bilinear - nearest).abs().amax() > 1e-2 * bilinear.abs().amax()
    layer4 = explain(model, images, TARGETS, method="guided-gradcam", target_layer="layer4")
    torch.testing.assert_close(bilinear, layer4, rtol=0, atol=0)
    layer3 = explain(model, images, TARGETS, method="guided-gradcam", target_layer="layer3")
    assert (layer3 - layer4).abs().amax() > 1e-2 * layer4.abs().amax()


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(model, images):
    guided = attributions(model, images)
    cams = explain(model, images, TARGETS, method="gradcam", upsample=False)
    up = F.interpolate(cams, size=(64, 64), mode="bilinear", align_corners=False)
    maps = explain(model, images, TARGETS, method="guided-gradcam", reduce="l2")
    close(maps, (guided * up[:, :, None]).pow(2).sum(2).sqrt())


class Dense(nn.Module):
    """``score = W2 act(W1 x + b1)`` on flattened ``(B, 1, 2, 2)`` images."""

    def __init__(self, activation: nn.Module | None = None, functional=None) -> None:
        super().__init__()
        self.first = nn.Linear(4, 3)
        self.act = activation
        self.functional = functional
        self.second = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.first.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0],
                                                  [-1.0, 1.0, 2.0, 0.0],
                                                  [4.0, 3.0, -1.0, 2.0]]))
            self.first.bias.copy_(torch.tensor([0.5, -0.5, 1.0]))
            self.second.weight.copy_(torch.tensor([[2.0, -3.0, 1.0], [-1.0, 0.5, 2.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x.flatten(1))
        hidden = self.act(hidden) if self.act is not None else self.functional(hidden)
        return self.second(hidden)


def test_guided_relu6_by_hand():
    model = Dense(nn.ReLU6(inplace=True))
    x = torch.tensor([[1.0, 0.5, 1.0, 1.0], [0.5, -1.0, 0.2, 0.1]]).view(2, 1, 2, 2)
    hidden = model.first(x.flatten(1)).detach()
    # hidden units below 0, inside (0, 6) and above 6 all occur
    assert (hidden < 0).any() and ((hidden > 0) & (hidden < 6)).any() and (hidden > 6).any()
    w1, w2 = model.first.weight.detach(), model.second.weight.detach()
    for k in range(2):
        expected = (((hidden > 0) & (hidden < 6)) * w2[k].clamp(min=0)) @ w1  # (B, 4)
        maps = explain(model, x, k, method="guided-backprop", reduce="sum")
        torch.testing.assert_close(maps[:, 0].flatten(1), expected)
        plain = explain(model, x, k, method="saliency", reduce="sum")
        assert not torch.allclose(plain, maps)


@pytest.mark.parametrize("functional", [F.relu, torch.relu, F.relu6,
                                        lambda h: F.relu(h, inplace=True)])
def test_functional_relus_are_refused_or_left_unguided(functional):
    model = Dense(functional=functional)
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    for method in ("guided-backprop", "guided-gradcam"):
        options = {"target_layer": "first"} if method == "guided-gradcam" else {}
        with pytest.raises(ValueError, match=r"applies 1 ReLU\(s\) as functions.*strict=False"):
            explain(model, x, [0, 1, 0], method=method, **options)
    assert count_hooks(model) == 0
    # strict=False leaves the functional ReLU unguided: the plain gradient of this model
    loose = explain(model, x, [0, 1, 0], method="guided-backprop", strict=False, reduce="sum")
    plain = explain(model, x, [0, 1, 0], method="saliency", reduce="sum")
    torch.testing.assert_close(loose, plain)


def test_other_activations_are_not_taken_for_relus():
    model = Dense(functional=lambda h: F.hardtanh(h, -1.0, 1.0))
    x = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    maps = explain(model, x, 0, method="guided-backprop", reduce="sum")  # no error
    torch.testing.assert_close(maps, explain(model, x, 0, method="saliency", reduce="sum"))


def test_densenet_is_refused_and_left_unguided_like_captum():
    torch.manual_seed(0)
    model = densenet121(weights=None).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="DenseNet applies 1 ReLU"):
        explain(model, x, 3, method="guided-backprop")
    loose = attributions(model, x, targets=[[3]], strict=False)
    peer = GuidedBackprop(model).attribute(x.clone(), target=3)
    close(loose[:, 0], peer)
    assert count_hooks(model) == 0


def test_mobilenet_v2_relu6_modules_are_all_guided():
    torch.manual_seed(0)
    model = mobilenet_v2(weights=None).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    guided = explain(model, x, 3, method="guided-backprop", reduce="sum")  # strict: no error
    plain = explain(model, x, 3, method="saliency", reduce="sum")
    assert (guided - plain).abs().amax() > 0.1 * plain.abs().amax()


def test_unguided_relus_counts_graph_nodes():
    x = torch.randn(2, 3, requires_grad=True)
    assert unguided_relus((F.relu(x) + F.relu6(x) + torch.sigmoid(x)).sum()) == 2
    assert unguided_relus(x.sum()) == 0


def test_score_function_targets(model, images):
    by_class = explain(model, images, [3, 5], method="guided-gradcam")
    by_function = explain(
        model, images, lambda out: out.gather(1, torch.tensor([[3], [5]]))[:, 0],
        method="guided-gradcam",
    )
    torch.testing.assert_close(by_function, by_class)


class Failing(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inner(x)
        raise RuntimeError("forward failed on purpose")


@pytest.mark.parametrize("method", ["guided-backprop", "guided-gradcam"])
def test_no_hook_left_after_an_error(model, images, method):
    failing = Failing(model)
    options = {"target_layer": "inner.layer4"} if method == "guided-gradcam" else {}
    with pytest.raises(RuntimeError, match="on purpose"):
        explain(failing, images, TARGETS, method=method, **options)
    assert count_hooks(failing) == 0


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("guided-gradcam", {"interpolation": "bicubic"}, "interpolation must be one of"),
        ("guided-gradcam", {"reduce": "max"}, "reduce must be one of"),
        ("guided-backprop", {"reduce": "max"}, "reduce must be one of"),
        ("guided-backprop", {"target_layer": "layer4"}, "does not use a target layer"),
    ],
)
def test_option_errors(model, images, method, options, message):
    with pytest.raises(ValueError, match=message):
        explain(model, images, TARGETS, method=method, **options)
    assert count_hooks(model) == 0
