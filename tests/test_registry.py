"""Properties every registered map method must have, run over ``loupe.list_methods()``.

New methods are picked up automatically; ``FAST`` only makes the expensive ones cheap here.
Every property is checked on the CPU and, where there is one, on the GPU (``device``
fixture; ``pytest -m cuda`` selects the GPU runs), with TF32 off and deterministic cuDNN
algorithms so that the GPU is held to the same float32 tolerances.
The model is a small torchvision ResNet (BasicBlocks, GAP + linear head) so every method
applies: gradient methods, the Grad-CAM family, Score-CAM, CAM and model-free baselines.
``amn`` explains a label-conditioned AMN model: there the ResNet is the classifier of an AMN
model whose network runs on the ResNet's own stages (:func:`model_for`).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

import loupe
from loupe import explain, get_method, list_methods
from loupe.models import AMNModel, AMNNetwork, backbone_features
from tests.conftest import CUDA, DEVICES, count_hooks, exact_cuda_arithmetic

METHODS = list_methods()

# Small options that keep the expensive methods fast; unknown methods run with defaults.
FAST: dict[str, dict[str, object]] = {
    "smoothgrad": {"n_samples": 3, "chunk_size": 4},
    "integrated-gradients": {"steps": 3, "chunk_size": 4},
    "shuffle": {"n_shuffles": 3, "chunk_size": 4},
    "scorecam": {"chunk_size": 16},
    # layer3: at layer4 (GAP + linear) the gradients do not depend on the input, so the
    # noise, hence the seed, could not change the maps
    "smoothgradcam++": {"n_samples": 3, "chunk_size": 4, "target_layer": "layer3"},
    "sscam": {"n_samples": 2, "chunk_size": 24},
    "iscam": {"n_samples": 2, "chunk_size": 24},
    "occlusion": {"window": 6, "stride": 5, "chunk_size": 8},
    "rise": {"n_masks": 40, "cells": 4, "chunk_size": 16},
}

TARGETS = torch.tensor([[3, 7], [5, 1], [0, 9]])


class TinyResNet(ResNet):
    """torchvision's ResNet forward (``conv1 bn1 relu maxpool layer1..4 avgpool fc``) with
    narrow BasicBlocks, output stride 2, SiLU activations and an optional failure in forward.

    SiLU instead of ReLU: a smooth network keeps "batch equals each image alone" at float
    rounding; with ReLU a unit whose input is within rounding of 0 can flip between batch
    compositions and make a gradient jump (observed on resnet18 at the 1e-3 level).
    """

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        nn.Module.__init__(self)
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.SiLU()
        self.maxpool = nn.Identity()
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False),
                             nn.BatchNorm2d(2 * width))
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2, downsample=down)
        self.layer3 = BasicBlock(2 * width, 2 * width)
        self.layer4 = BasicBlock(2 * width, 2 * width)
        for block in (self.layer1, self.layer2, self.layer3, self.layer4):
            block.relu = nn.SiLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)
        self.fail = False
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail:
            features = self.relu(self.bn1(self.conv1(x)))
            for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
                features = layer(features)
            raise RuntimeError(f"forward failed on purpose after features {features.shape}")
        return super().forward(x)


def tiny_resnet(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    model = TinyResNet()
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))
    return model.eval()


class TinyAMN(AMNModel):
    """An AMN model around a tiny ResNet (its classifier), whose network reads the ResNet's
    stages; it fails in forward when the ResNet's ``fail`` is set, and counts its calls."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.classifier.calls += 1
        if self.classifier.fail:
            raise RuntimeError("forward failed on purpose")
        return super().forward(images, labels)


def model_for(method: str, model: nn.Module) -> nn.Module:
    """The model ``method`` explains: ``model`` itself, or for ``amn`` a :class:`TinyAMN`
    with ``model`` as its classifier (head seeded, on ``model``'s device)."""
    if method != "amn":
        return model
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        network = AMNNetwork(backbone_features(model), 32, 10, rates=(1, 2)).to(device)
    return TinyAMN(network, model)


def constant_model() -> TinyResNet:
    """Same network with a zero head weight: the logits are the bias whatever the input."""
    model = tiny_resnet()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.linspace(-1, 1, 10))
    return model


@pytest.fixture(scope="module", params=DEVICES)
def device(request) -> torch.device:
    if request.param == "cuda":
        with exact_cuda_arithmetic():
            yield torch.device("cuda")
    else:
        yield torch.device(request.param)


@pytest.fixture(scope="module")
def model(device) -> TinyResNet:
    return tiny_resnet().to(device)


def seeded_images() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def images(device) -> torch.Tensor:
    return seeded_images().to(device)


def run(method: str, model: nn.Module, images: torch.Tensor, targets=TARGETS, **extra):
    return explain(model_for(method, model), images, targets, method=method,
                   **{**FAST.get(method, {}), **extra})


def _check_maps(maps: torch.Tensor, images: torch.Tensor, k: int) -> None:
    assert maps.shape == (images.shape[0], k, *images.shape[-2:])
    assert maps.dtype == torch.float32
    assert maps.device == images.device
    assert torch.isfinite(maps).all()


def test_registry_lists_the_builtin_methods():
    expected = {"saliency", "gradxinput", "smoothgrad", "integrated-gradients", "gradcam"}
    assert expected <= set(METHODS)
    assert METHODS == sorted(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_spec_is_documented(method):
    spec = get_method(method)
    assert spec.name == method
    assert spec.paper.strip()
    assert spec.function.__doc__ and spec.function.__doc__.strip()
    assert spec.uses_layer in (True, False) and spec.stochastic in (True, False)
    assert spec.gradients in (True, False)


@pytest.mark.parametrize("method", METHODS)
def test_shape_dtype_device_finite(method, model, images):
    _check_maps(run(method, model, images), images, 2)
    _check_maps(run(method, model, torch.zeros_like(images)), images, 2)
    _check_maps(run(method, constant_model().to(images.device), images), images, 2)
    _check_maps(run(method, model, images, targets=None), images, 1)


@pytest.mark.parametrize("method", METHODS)
@CUDA[0]
@CUDA[1]
def test_maps_stay_on_the_gpu_and_match_the_cpu(method):
    images = seeded_images()
    cpu = run(method, tiny_resnet(), images)
    with exact_cuda_arithmetic():
        maps = run(method, tiny_resnet().cuda(), images.cuda())
    _check_maps(maps, images.cuda(), 2)
    if not get_method(method).stochastic:  # the GPU draws other random numbers
        scale = cpu.abs().max().item()
        torch.testing.assert_close(maps.cpu(), cpu, rtol=1e-3, atol=1e-3 * scale)


# AMN min-max normalises softmax probabilities over a small map, which magnifies the float
# rounding of convolutions whose algorithm depends on the batch size (oneDNN): 2.1e-5 of the
# map's scale between batch 3 and batch 1 on an Intel Xeon VM with torch 2.14.1.
BATCH_TOLERANCE = {"amn": 1e-4}


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_each_image_alone(method, model, images):
    batch = run(method, model, images)
    tolerance = BATCH_TOLERANCE.get(method, 1e-5)
    for i in range(images.shape[0]):
        alone = run(method, model, images[i : i + 1], targets=TARGETS[i : i + 1])
        scale = batch[i].abs().max().item()
        torch.testing.assert_close(alone, batch[i : i + 1], rtol=tolerance,
                                   atol=tolerance * scale)


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_and_seeded(method, model, images):
    first = run(method, model, images)
    torch.testing.assert_close(run(method, model, images), first, rtol=0, atol=0)
    if get_method(method).stochastic:
        torch.testing.assert_close(run(method, model, images, seed=5),
                                   run(method, model, images, seed=5), rtol=0, atol=0)
        other = run(method, model, images, seed=6)
        assert not torch.equal(other, first), "a different seed should give different maps"


@pytest.mark.parametrize("method", METHODS)
def test_padding_targets_give_zero_maps(method, model, images):
    maps = run(method, model, images, targets=[[3, 7], [5], [0, 9]])
    assert torch.count_nonzero(maps[1, 1]) == 0
    full = run(method, model, images, targets=[[3, 7], [5, 5], [0, 9]])
    torch.testing.assert_close(maps[:, 0], full[:, 0])


def _state(model: nn.Module):
    return (
        {name: m.training for name, m in model.named_modules()},
        {name: p.requires_grad for name, p in model.named_parameters()},
        count_hooks(model),
    )


def _prepared_model() -> TinyResNet:
    """A model in training mode with some frozen parameters and one user hook, so that
    restoring means restoring a mixed state, not setting everything to one value."""
    model = tiny_resnet()
    model.train()
    model.layer1.eval()
    for p in model.conv1.parameters():
        p.requires_grad_(False)
    model.layer2.register_forward_hook(lambda module, inputs, output: None)
    return model


def _assert_input_untouched(images: torch.Tensor, copy: torch.Tensor, requires_grad: bool):
    assert torch.equal(images, copy)
    assert images.requires_grad is requires_grad
    assert images.grad is None


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_state_restored_and_input_untouched(method, images, requires_grad):
    model = _prepared_model().to(images.device)
    before = _state(model)
    x = images.clone().requires_grad_(requires_grad)
    copy = images.clone()
    _check_maps(run(method, model, x), images, 2)
    assert _state(model) == before
    _assert_input_untouched(x, copy, requires_grad)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_state_restored_after_an_error_in_forward(method, images):
    model = _prepared_model().to(images.device)
    before = _state(model)
    x = images.clone().requires_grad_(True)
    layer = {"target_layer": "layer4"} if get_method(method).uses_layer else {}
    model.fail = True
    model.calls = 0
    try:
        run(method, model, x, **layer)
    except RuntimeError as error:
        assert "forward failed on purpose" in str(error)
    else:
        assert model.calls == 0, "the model's forward raised, yet the method returned maps"
    assert _state(model) == before
    _assert_input_untouched(x, images, True)


@pytest.mark.parametrize("method", METHODS)
def test_same_maps_under_no_grad(method, model, images):
    # Callers often wrap inference in torch.no_grad(); explain must not depend on it.
    expected = run(method, model, images)
    with torch.no_grad():
        torch.testing.assert_close(run(method, model, images), expected)


@pytest.mark.parametrize("method", METHODS)
def test_forward_only_methods_record_no_graph(method, model, images):
    """A method registered with ``gradients=False`` runs every forward with autograd off
    (``explain`` leaves the parameters' flags alone for it); any other runs no forward that
    records a graph through the parameters (autograd on and a parameter requiring grad). A
    wrong flag fails here or in the tests above (a backward under ``torch.no_grad()``
    raises)."""
    explained = model_for(method, model)
    seen: list[tuple[bool, bool]] = []

    def spy(module, inputs, output):
        seen.append((torch.is_grad_enabled(), any(p.requires_grad for p in module.parameters())))

    handle = explained.register_forward_hook(spy)
    try:
        explain(explained, images, TARGETS, method=method, **FAST.get(method, {}))
    finally:
        handle.remove()
    if method.startswith("baseline-"):
        assert not seen  # model-free
        return
    assert seen
    if get_method(method).gradients:
        assert not any(enabled and trainable for enabled, trainable in seen)
    else:
        assert not any(enabled for enabled, _ in seen)


def test_list_methods_is_the_public_registry():
    assert loupe.list_methods() == METHODS


@pytest.mark.parametrize("method", METHODS)
def test_explainer_gives_explain_maps_and_restores_the_model(method, images):
    model = _prepared_model().to(images.device)
    before = _state(model)
    expected = [run(method, model, images), run(method, model, images[1:], targets=TARGETS[1:])]
    assert _state(model) == before
    with loupe.explainer(model_for(method, model), method, **FAST.get(method, {})) as batch:
        maps = [batch(images, TARGETS), batch(images[1:], TARGETS[1:])]
        assert count_hooks(model) >= before[2]  # its hooks are on the model in the block
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    assert _state(model) == before
    with pytest.raises(RuntimeError, match="used after its with block ended"):
        batch(images, TARGETS)


@pytest.mark.parametrize("method", METHODS)
def test_explainer_restores_the_model_after_an_error_in_forward(method, images):
    model = _prepared_model().to(images.device)
    before = _state(model)
    layer = {"target_layer": "layer4"} if get_method(method).uses_layer else {}
    model.fail = True
    model.calls = 0
    try:
        with loupe.explainer(model_for(method, model), method,
                             **{**FAST.get(method, {}), **layer}) as batch:
            batch(images, TARGETS)
    except RuntimeError as error:
        assert "forward failed on purpose" in str(error)
    else:
        assert model.calls == 0, "the model's forward raised, yet the method returned maps"
    assert _state(model) == before
