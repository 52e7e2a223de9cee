"""Ablation-CAM, FullGrad, ShapleyCAM, Finer-CAM, EigenCAM, KPCA-CAM and RandomCAM: hand
oracles, batching, properties and errors (the pytorch-grad-cam agreement is in
``test_cam_peers.py``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from loupe import explain
from loupe.api import MapContext
from loupe.hooks import hooked
from loupe.layers import tokens_to_grid
from loupe.methods.finer import finer_scores, similar_classes
from loupe.methods.fullgrad import bias_layers, full_gradients
from loupe.methods.random_cam import random_weights
from loupe.targets import Targets, resolve_targets
from tests.conftest import count_hooks
from tests.test_registry import tiny_resnet


class Residual(nn.Module):
    """stem -> mid (the target layer) -> ReLU(mid) + stem -> GAP -> fc: a tensor from before
    the target layer (``stem``'s output) meets its output after it, as a residual stream
    does; counts its forwards and the batch size of each."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 5)
        self.batches: list[int] = []

    def head(self, mid: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        return self.fc((torch.relu(mid) + stem).mean((-2, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        stem = self.stem(x)
        return self.head(self.mid(stem), stem)


@pytest.fixture
def residual() -> Residual:
    torch.manual_seed(0)
    model = Residual().eval()
    with torch.no_grad():
        model.mid[0].weight[2] = 0  # channel 2 is zero everywhere after the ReLU
        model.mid[0].bias[2] = -1
    return model


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 9, 11, generator=torch.Generator().manual_seed(1))


# -- Ablation-CAM ----------------------------------------------------------------------------

def ablation_by_loop(model: Residual, images: torch.Tensor, targets: list[list[int]]):
    """Ablation-CAM one image, one channel at a time, straight from the paper."""
    maps = []
    with torch.no_grad():
        for b, row in enumerate(targets):
            stem = model.stem(images[b : b + 1])
            mid = model.mid(stem)
            clean = model.head(mid, stem)[0]
            drops = []
            for c in range(mid.shape[1]):
                ablated = mid.clone()
                ablated[:, c] = 0
                drops.append(model.head(ablated, stem)[0])
            drops = torch.stack(drops)  # (C, classes)
            rows = [((clean[k] - drops[:, k]) / clean[k] if k >= 0 else torch.zeros(6))
                    for k in row]
            maps.append(torch.stack([torch.einsum("c,chw->hw", w, mid[0]) for w in rows]))
    return torch.stack(maps).clamp(min=0)


def ablation(model, images, targets, **options):
    return explain(model, images, targets, method="ablationcam", target_layer="mid",
                   upsample=False, **options)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 256])
def test_ablationcam_matches_a_loop_oracle_at_any_chunk_size(residual, images, chunk_size):
    targets = [[0, 3], [2, -1], [4, 4]]
    maps = ablation(residual, images, targets, chunk_size=chunk_size)
    expected = ablation_by_loop(residual, images, targets)
    assert maps.shape == (3, 2, 5, 6) and expected[0, 0].amax() > expected[0, 0].amin()
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert (maps[1, 1] == 0).all()


def test_ablationcam_runs_one_image_per_forward_and_skips_dead_channels(residual, images):
    """One clean forward of the batch, then per image ceil(5 live channels / chunk) forwards
    of that image alone; channel 2 (zero everywhere) needs none."""
    residual.batches.clear()
    ablation(residual, images, [[0, 1], [2, 3], [4, 0]], chunk_size=2)
    assert residual.batches == [3] + [1] * (3 * math.ceil(5 / 2))
    assert count_hooks(residual) == 0


def test_ablationcam_of_tokens_ablates_the_last_dimension():
    """A token layer ``(B, N, C)``: channel c of every token is zeroed, class token included."""
    torch.manual_seed(0)
    embed, blocks = nn.Linear(3, 8), nn.Sequential(nn.Linear(8, 8), nn.GELU())
    fc = nn.Linear(8, 4)

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.blocks, self.fc = embed, blocks, fc

        def forward(self, x):
            tokens = self.embed(x.flatten(2).transpose(1, 2))  # (B, 16, 8)
            tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)  # class token
            return self.fc(self.blocks(tokens)[:, 0] + tokens[:, 0])

    model = Tokens().eval()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    maps = explain(model, x, [[1], [3]], method="ablationcam", target_layer="blocks",
                   upsample=False, chunk_size=3)
    with torch.no_grad():
        tokens = model.embed(x.flatten(2).transpose(1, 2))
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)
        out = model.blocks(tokens)
        expected = []
        for b, k in enumerate([1, 3]):
            clean = model.fc(out[b, 0] + tokens[b, 0])[k]
            weights = []
            for c in range(8):
                ablated = out[b].clone()
                ablated[:, c] = 0
                weights.append((clean - model.fc(ablated[0] + tokens[b, 0])[k]) / clean)
            grid = tokens_to_grid(out[b : b + 1])[0]
            expected.append(torch.einsum("c,chw->hw", torch.stack(weights), grid))
    torch.testing.assert_close(maps, torch.stack(expected)[:, None].clamp(min=0), rtol=1e-4,
                               atol=1e-6)


@pytest.mark.parametrize("chunk_size", [0, 2.5, True])
def test_ablationcam_rejects_a_bad_chunk_size(residual, images, chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        ablation(residual, images, 1, chunk_size=chunk_size)
    assert count_hooks(residual) == 0


def test_ablationcam_rejects_a_layer_that_is_not_a_map(residual, images):
    with pytest.raises(ValueError, match="ablationcam needs a target layer"):
        explain(residual, images, 1, method="ablationcam", target_layer="mid",
                reshape=lambda x: x[:, :3])
    assert count_hooks(residual) == 0


# -- FullGrad --------------------------------------------------------------------------------

class PiecewiseLinear(nn.Module):
    """Convolutions with biases, eval batch norms with running statistics, in-place ReLUs and
    an in-place residual add: piecewise linear in the input, so FullGrad is complete."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(x))
        y += x[:, :, ::2, ::2]
        return self.fc(self.relu(y).mean((-2, -1)))


def test_fullgrad_gradients_are_complete():
    """Srinivas & Fleuret's completeness: ``S = <dS/dx, x> + sum_l <b, dS/dz_l> + b_fc``."""
    torch.manual_seed(0)
    model = PiecewiseLinear().double().eval()
    generator = torch.Generator().manual_seed(1)
    for bn in (model.bn1, model.bn2):
        bn.running_mean.copy_(torch.randn(4, generator=generator, dtype=torch.float64))
        bn.running_var.copy_(0.5 + torch.rand(4, generator=generator, dtype=torch.float64))
        bn.bias.data.normal_(generator=generator)
    assert list(bias_layers(model)) == ["conv1", "bn1", "bn2"]
    images = torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    classes = torch.tensor([[0, 2], [1, 0]])
    with hooked(model) as captured:
        ctx = MapContext(model, images, resolve_targets(classes, 2, images.device), None,
                         captured, tokens_to_grid)
        input_grads, layers, _ = full_gradients(ctx)
    assert len(layers) == 3 and count_hooks(model) == 0
    total = (input_grads * images).sum((2, 3, 4)).T  # (B, K)
    for bias, grad in layers:
        total = total + (bias[:, None, None] * grad).sum((2, 3, 4)).T
    with torch.no_grad():
        logits = model(images)
    expected = logits.gather(1, classes) - model.fc.bias[classes]
    assert expected.abs().amin() > 1e-3
    torch.testing.assert_close(total, expected, rtol=1e-9, atol=1e-9)


def test_fullgrad_maps_sum_scaled_parts():
    torch.manual_seed(0)
    model = PiecewiseLinear().eval()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    maps = explain(model, images, [[0, 2], [1, -1]], method="fullgrad")
    assert maps.shape == (2, 2, 8, 8) and (maps[1, 1] == 0).all()
    # 3 colour channels + 4 channels in each of 3 layers, each scaled to at most 1
    assert 1 < maps.amax() <= 15 and maps.amin() >= 0
    with pytest.raises(ValueError, match="does not use a target layer"):
        explain(model, images, 0, method="fullgrad", target_layer="conv1")


# -- ShapleyCAM ------------------------------------------------------------------------------

def test_shapleycam_adds_half_the_hessian_vector_product():
    """Against ``torch.autograd.functional`` on the SiLU head after layer3: ``w = mean_ij(g -
    H A / 2)``, with ``H`` the Hessian of the score with respect to layer3's output ``A``."""
    model = tiny_resnet()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model.layer3(model.layer2(model.layer1(model.relu(model.bn1(model.conv1(images))))))
    expected = []
    for k in (3, 6):
        def score(x, k=k):
            return model.fc(model.layer4(x).mean((-2, -1)))[:, k].sum()

        _, grad = torch.autograd.functional.vjp(score, a)
        _, hvp = torch.autograd.functional.hvp(score, a, a)
        weights = (grad - hvp / 2).mean((-2, -1))
        expected.append(torch.einsum("bc,bchw->bhw", weights, a).clamp(min=0))
    expected = torch.stack(expected, 1)
    maps = explain(model, images, [[3, 6], [3, 6]], method="shapleycam", target_layer="layer3",
                   upsample=False)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6 * expected.abs().amax())
    gradcam = explain(model, images, [[3, 6], [3, 6]], method="gradcam", target_layer="layer3",
                      upsample=False)
    assert (gradcam - maps).abs().amax() > 1e-3 * maps.abs().amax()


def test_shapleycam_is_gradcam_on_a_linear_head():
    """At the layer the GAP + linear head reads, the logit is linear in A: H A = 0."""
    model = tiny_resnet()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    maps = [explain(model, images, [[3, 6], [0, 1]], method=m, target_layer="layer4")
            for m in ("shapleycam", "gradcam")]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-6, atol=1e-7)


# -- Finer-CAM -------------------------------------------------------------------------------

def test_similar_classes_and_finer_scores_by_hand():
    logits = torch.tensor([[0.0, 1.0, 3.0, 3.5, -1.0, 2.6]], requires_grad=True)
    classes = torch.tensor([[2, 4]])
    assert similar_classes(logits.detach(), classes, 3).tolist() == [[[5, 3, 1], [0, 1, 5]]]
    scores = finer_scores(logits, Targets(1, classes=classes), 2, 0.5)
    p = logits.detach().softmax(1)[0]
    y = logits.detach()[0]
    first = (p[5] * (y[2] - 0.5 * y[5]) + p[3] * (y[2] - 0.5 * y[3])) / (p[5] + p[3] + 1e-9)
    second = (p[0] * (y[4] - 0.5 * y[0]) + p[1] * (y[4] - 0.5 * y[1])) / (p[0] + p[1] + 1e-9)
    torch.testing.assert_close(scores.detach(), torch.stack([first, second])[None])


def test_finercam_errors():
    model = tiny_resnet()
    images = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="score-function targets are not supported"):
        explain(model, images, lambda out: out[:, 0], method="finercam")
    with pytest.raises(ValueError, match="needs more than similar=10 classes"):
        explain(model, images, 1, method="finercam", similar=10)
    with pytest.raises(ValueError, match="similar must be a positive integer"):
        explain(model, images, 1, method="finercam", similar=0)
    with pytest.raises(ValueError, match="alpha must be a number"):
        explain(model, images, 1, method="finercam", alpha="1")
    assert count_hooks(model) == 0


# -- EigenCAM, KPCA-CAM, RandomCAM -----------------------------------------------------------

@pytest.mark.parametrize("method", ["eigencam", "kpcacam", "randomcam"])
def test_class_agnostic_methods_give_every_target_the_same_map(method):
    model = tiny_resnet()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    maps = explain(model, images, [[3, 6, 1], [0, -1, 2]], method=method, upsample=False)
    assert maps.amax() > 0
    torch.testing.assert_close(maps[0, 1], maps[0, 0], rtol=0, atol=0)
    torch.testing.assert_close(maps[1, 2], maps[1, 0], rtol=0, atol=0)
    assert (maps[1, 1] == 0).all()


def test_kpcacam_with_a_linear_kernel_is_eigencam():
    model = tiny_resnet()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    eigen = explain(model, images, 1, method="eigencam", upsample=False)
    linear = explain(model, images, 1, method="kpcacam", kernel="linear", upsample=False)
    torch.testing.assert_close(linear, eigen, rtol=1e-4, atol=1e-5 * eigen.amax())
    # (the default sigmoid kernel is nearly linear on these small activations: tanh(x + 1))
    rbf = explain(model, images, 1, method="kpcacam", kernel="rbf", gamma=1.0, upsample=False)
    assert (rbf / rbf.amax() - eigen / eigen.amax()).abs().amax() > 1e-2


@pytest.mark.parametrize(("options", "message"), [
    ({"kernel": "gaussian"}, "kernel must be one of sigmoid, rbf, poly, linear, cosine"),
    ({"gamma": 0}, "gamma must be a positive number"),
    ({"gamma": "auto"}, "gamma must be a positive number"),
])
def test_kpcacam_errors(options, message):
    model = tiny_resnet()
    with pytest.raises(ValueError, match=message):
        explain(model, torch.randn(1, 3, 16, 16), 1, method="kpcacam", **options)
    assert count_hooks(model) == 0


def test_random_weights_are_seeded_uniform_and_shared_by_the_batch():
    weights = random_weights(1000, seed=3)
    assert weights.shape == (1000,) and -1 <= weights.min() < -0.9 and 0.9 < weights.max() < 1
    torch.testing.assert_close(random_weights(1000, seed=3), weights, rtol=0, atol=0)
    generator = torch.Generator().manual_seed(3)
    torch.testing.assert_close(random_weights(1000, generator=generator), weights)
    with pytest.raises(ValueError, match="seed must be an int"):
        random_weights(4, seed="3")
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        random_weights(4, generator=3)


# -- real photo ------------------------------------------------------------------------------

def test_new_methods_on_a_real_photo(assets):
    """The shared ImageNet MobileNetV2 on the cat-and-dog photo (the dog fills the top half,
    the cat the bottom): the class-discriminative new methods put the dog map's mass in the
    top half and the cat map's in the bottom; the class-agnostic EigenCAM gives both the same
    map. Options arrive through the CLI's ``--option`` parser."""
    import importlib.util

    import numpy as np
    from PIL import Image
    from torchvision.models import mobilenet_v2

    from loupe.cli.explain import method_options

    weights, photo = assets / "weights", assets / "photos" / "cat_and_dog.png"
    if not (weights / "mobilenet_v2_imagenet1k_coral.pth").exists() or not photo.exists():
        pytest.skip("the MobileNetV2 weights or the cat-and-dog photo are missing")
    spec = importlib.util.spec_from_file_location("tf_same", weights / "tf_same_padding.py")
    patch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patch)
    model = mobilenet_v2(num_classes=1000)
    model.load_state_dict(torch.load(weights / "mobilenet_v2_imagenet1k_coral.pth",
                                     weights_only=True))
    patch.tf_same_padding(model.eval())
    with Image.open(photo) as image:
        pixels = np.array(image.convert("RGB").resize((224, 224)), dtype=np.float32)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None] / 255 * 2 - 1
    dog_and_cat = [[243, 285]]  # bull mastiff, Egyptian cat
    for method, pairs in [("ablationcam", ["chunk_size=512"]), ("finercam", ["alpha=1.0"]),
                          ("gradcam-elementwise", ["aug_smooth=true"]),
                          ("shapleycam", ["eigen_smooth=false"])]:
        name, options = method_options(method, pairs)
        maps = explain(model, x, dog_and_cat, method=name, **options)
        top = maps[0, :, :112].sum((-2, -1)) / maps[0].sum((-2, -1))
        assert top[0] > 0.6 and top[1] < 0.4, (method, top)
    eigen = explain(model, x, dog_and_cat, method="eigencam")
    torch.testing.assert_close(eigen[0, 0], eigen[0, 1])
    assert eigen[0, 0, :112].sum() > eigen[0, 0, 112:].sum()


def test_fullgrad_without_a_batched_backward():
    """A backward that vmap cannot batch (a tensor hook that detaches, as pytorch-grad-cam's
    gradient hooks do) falls back to one backward per target, with the same maps."""
    torch.manual_seed(0)
    model = PiecewiseLinear().eval()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = explain(model, images, [[0, 2], [1, 0]], method="fullgrad")
    seen = []

    def detaching(module, inputs, output):
        if output.requires_grad:
            output.register_hook(lambda grad: seen.append(grad.detach()))

    handle = model.conv2.register_forward_hook(detaching)
    try:
        maps = explain(model, images, [[0, 2], [1, 0]], method="fullgrad")
    finally:
        handle.remove()
    assert len(seen) == 2  # the fallback's two backward passes
    torch.testing.assert_close(maps, expected)
