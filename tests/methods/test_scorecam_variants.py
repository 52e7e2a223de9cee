"""SS-CAM, IS-CAM and Smooth Grad-CAM++ against torchcam, given the same noise.

Every comparison is at the target layer's resolution before any min-max scaling: loupe with
``upsample=False``, torchcam with ``normalized=False`` (its maps are then ``ReLU(sum_c w_c
A_c)``). torchcam takes one class per image, so multi-label targets run it once per column.

How the noise is matched: torchcam draws its noise with ``self._distrib.sample(shape)`` (a
``torch.distributions.Normal(0, std)`` on the global RNG), once per noisy sample, for the
whole batch. The tests replace ``_distrib`` with :class:`SameNoise`, whose ``sample`` returns
``std * z_s`` broadcast to the batch, with ``z_s`` loupe's documented draws for the seed:
``torch.randn((C_layer, H, W), generator)`` per sample for SS-CAM (on the masks),
``standard_noise(n, (3, H, W), seed)[s]`` for Smooth Grad-CAM++ (on the image).
"""

from __future__ import annotations

import math

import pytest
import torch
from torchcam.methods import ISCAM, SSCAM, SmoothGradCAMpp

from loupe import explain
from loupe.methods.gradcam import gradcam_plus_plus_weights
from loupe.methods.gradients import standard_noise
from loupe.methods.scorecam_variants import integration_scales, scaled_channel_masks
from tests.conftest import count_hooks
from tests.methods.test_cam_family import assert_agree
from tests.methods.test_scorecam import Tiny

TARGETS = [[3, 7], [5, 1]]


@pytest.fixture
def model(seeded_resnet18) -> torch.nn.Module:
    return seeded_resnet18


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    # 32x32: layer1 is 64 channels of 8x8, which keeps the masked forwards cheap
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


class SameNoise:
    """Stands in for torchcam's ``Normal(0, std)``: the s-th call returns ``std * draws[s]``
    broadcast to the requested shape ``(B, ...)``."""

    def __init__(self, draws: list[torch.Tensor], std: float) -> None:
        self.draws, self.std, self.calls = draws, std, 0

    def sample(self, shape: torch.Size) -> torch.Tensor:
        draw = self.draws[self.calls]
        self.calls += 1
        return (self.std * draw).expand(shape).clone()


def torchcam_columns(extractor, model, images, prepare=lambda column: None) -> torch.Tensor:
    """(B, K, h, w) raw torchcam maps for TARGETS, one call per target column."""
    with torch.no_grad():
        model(images)
    columns = []
    for k in range(len(TARGETS[0])):
        prepare(k)
        (cam,) = extractor(class_idx=[row[k] for row in TARGETS], normalized=False)
        columns.append(cam.detach())
    return torch.stack(columns, dim=1)


def sscam_draws(n: int, channels: int, size: tuple[int, int], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn((channels, *size), generator=generator) for _ in range(n)]


def test_sscam_matches_torchcam_given_the_same_noise(model, images):
    n, std = 3, 0.7
    ours = explain(model, images, TARGETS, method="sscam", target_layer="layer1",
                   upsample=False, n_samples=n, stdev=std, seed=11, chunk_size=40)
    draws = sscam_draws(n, 64, (32, 32), seed=11)
    with SSCAM(model, "layer1", batch_size=48, num_samples=n, std=std,
               input_shape=(3, 32, 32)) as extractor:
        fakes = []

        def prepare(column: int) -> None:
            fakes.append(SameNoise(draws, std))
            extractor._distrib = fakes[-1]

        peer = torchcam_columns(extractor, model, images, prepare)
    assert [fake.calls for fake in fakes] == [n, n]
    assert_agree(ours, peer)
    # another seed gives other maps, beyond the tolerance: the noise is really matched
    other = explain(model, images, TARGETS, method="sscam", target_layer="layer1",
                    upsample=False, n_samples=n, stdev=std, seed=12, chunk_size=40)
    assert (other - peer).abs().amax() > 1e-2 * peer.abs().amax()
    assert count_hooks(model) == 0


def test_iscam_matches_torchcam(model, images):
    ours = explain(model, images, TARGETS, method="iscam", target_layer="layer1",
                   upsample=False, n_samples=4, chunk_size=50)
    with ISCAM(model, "layer1", batch_size=32, num_samples=4,
               input_shape=(3, 32, 32)) as extractor:
        peer = torchcam_columns(extractor, model, images)
    assert_agree(ours, peer)
    # and differs from Score-CAM at the same layer, so the check can fail
    scorecam = explain(model, images, TARGETS, method="scorecam", target_layer="layer1",
                       upsample=False)
    assert (scorecam - peer).abs().amax() > 1e-2 * peer.abs().amax()


def test_iscam_scores_dead_channels_with_one_zero_image_forward():
    """All-zero channels mask to the zero image at every step: loupe scores it once, torchcam
    once per channel and step, with the same maps."""
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():
        model.fc.weight.mul_(20)
        model.features[0].weight[[1, 4]] = 0
        model.features[0].bias[[1, 4]] = 0
    images = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(1))
    targets = [[0, 3], [4, 1]]
    model.forwards = 0
    ours = explain(model, images, targets, method="iscam", target_layer="features",
                   upsample=False, n_samples=3, chunk_size=5)
    # one clean forward, 3 steps x 2 images x 4 live channels, one zero image
    assert model.forwards == 1 + math.ceil(3 * 2 * 4 / 5) + 1
    with ISCAM(model, "features", batch_size=7, num_samples=3,
               input_shape=(3, 9, 11)) as extractor:
        with torch.no_grad():
            model(images)
        peer = torch.stack([
            extractor(class_idx=[row[k] for row in targets], normalized=False)[0]
            for k in range(2)
        ], dim=1)
    torch.testing.assert_close(ours, peer, rtol=1e-4, atol=1e-6)


def test_integration_scales_are_torchcams_running_sums():
    torch.testing.assert_close(integration_scales(4), torch.tensor([0.25, 0.75, 1.5, 2.5]))


def test_scaled_channel_masks_are_minmax_then_upsampled():
    activation = torch.tensor([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]]])
    masks = scaled_channel_masks(activation, (4, 4))
    assert masks.shape == (2, 1, 4, 4)
    # corners keep the low-resolution extremes (edges are replicated)
    assert masks[0, 0, 0, 0] == 0 and masks[0, 0, -1, -1] == pytest.approx(1, abs=1e-7)
    # (0 + 2) / 2 / 8 between the two top pixels, half-pixel centres
    assert masks[0, 0, 0, 1] == pytest.approx(0.75 * 0 + 0.25 * 0.25)
    assert (masks[1] == 0).all()  # a constant channel masks everything


# -- Smooth Grad-CAM++ ------------------------------------------------------------------------

def test_smoothgradcampp_matches_torchcam_given_the_same_noise(model, images):
    """At layer4 (GAP + linear head) torchcam computes the paper's formula, except that its
    map uses the activation of its last noisy forward (which overwrote the clean one): the
    test puts the clean activation back after torchcam has computed its weights."""
    n, std = 3, 0.3
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours = explain(model, images, TARGETS, method="smoothgradcam++", target_layer="layer4",
                   upsample=False, n_samples=n, stdev=std, seed=4, chunk_size=5)
    draws = list(standard_noise(n, (3, 64, 64), seed=4))
    with SmoothGradCAMpp(model, "layer4", num_samples=n, std=std,
                         input_shape=(3, 64, 64)) as extractor:
        weights_of = extractor._get_weights

        def clean_map_weights(*args, **kwargs):
            clean = [a.clone() for a in extractor.hook_a]
            weights = weights_of(*args, **kwargs)
            extractor.hook_a = clean
            return weights

        extractor._get_weights = clean_map_weights

        def prepare(column: int) -> None:
            extractor._distrib = SameNoise(draws, std)

        peer = torchcam_columns(extractor, model, images, prepare)
    model.zero_grad(set_to_none=True)
    assert_agree(ours, peer)
    gradcam = explain(model, images, TARGETS, method="gradcam", target_layer="layer4",
                      upsample=False)
    assert (gradcam - peer).abs().amax() > 1e-2 * peer.abs().amax()


def _layer3_split(model):
    """``x -> A`` (layer3's output) and ``A -> logits`` of a torchvision ResNet."""

    def features(x):
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        return model.layer3(model.layer2(model.layer1(x)))

    def head(a):
        return model.fc(torch.flatten(model.avgpool(model.layer4(a)), 1))

    return features, head


def smoothgradcampp_by_loop(model, images, targets, noise, std):
    """The paper's formula, one image, target and noisy sample at a time."""
    features, head = _layer3_split(model)
    maps = []
    with torch.no_grad():
        clean = features(images)
    for b, row in enumerate(targets):
        per_target = []
        for k in row:
            grads = []
            for z in noise:
                a = features(images[b : b + 1] + std * z).detach().requires_grad_(True)
                (g,) = torch.autograd.grad(head(a)[0, k], a)
                grads.append(g[0])
            g = torch.stack(grads)
            d1, d2, d3 = g.mean(0), g.pow(2).mean(0), g.pow(3).mean(0)
            a = clean[b]
            alpha = d2 / (2 * d2 + a.sum((1, 2), keepdim=True) * d3 + 1e-8)
            w = (alpha * d1.clamp(min=0)).sum((1, 2))
            per_target.append((w[:, None, None] * a).sum(0).clamp(min=0))
        maps.append(torch.stack(per_target))
    return torch.stack(maps)


def test_smoothgradcampp_matches_the_papers_formula_at_an_inner_layer(model, images):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ours = explain(model, images, TARGETS, method="smoothgradcam++", target_layer="layer3",
                   upsample=False, n_samples=3, stdev=0.5, seed=9, chunk_size=4)
    noise = standard_noise(3, (3, 64, 64), seed=9)
    expected = smoothgradcampp_by_loop(model, images, TARGETS, noise, 0.5)
    assert_agree(ours, expected)
    # the noise matters at layer3: without it the maps are Grad-CAM++'s, far from these
    plain = explain(model, images, TARGETS, method="smoothgradcam++", target_layer="layer3",
                    upsample=False, n_samples=1, stdev=0.0)
    assert (plain - expected).abs().amax() > 1e-2 * expected.abs().amax()


def test_smoothgradcampp_without_noise_is_gradcampp(model):
    """One noiseless sample: Grad-CAM++ (loupe's, checked against pytorch-grad-cam), with
    torchcam's eps."""
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ours = explain(model, images, TARGETS, method="smoothgradcam++", target_layer="layer3",
                   upsample=False, n_samples=1, stdev=0.0)
    features, head = _layer3_split(model)
    a = features(images).detach().requires_grad_(True)
    logits = head(a)
    expected = []
    for k in range(2):
        classes = torch.tensor([row[k] for row in TARGETS])
        (g,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), a,
                                   retain_graph=True)
        w = gradcam_plus_plus_weights(a.detach(), g, eps=1e-8)
        expected.append((w * a.detach()).sum(1).clamp(min=0))
    assert_agree(ours, torch.stack(expected, dim=1))


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("sscam", {"n_samples": 0}, "n_samples must be a positive integer, got 0"),
        ("sscam", {"stdev": -1.0}, "stdev must be a finite number >= 0, got -1.0"),
        ("sscam", {"seed": "1"}, "seed must be an int (or pass generator=), got '1'"),
        ("sscam", {"chunk_size": 0}, "chunk_size must be a positive integer, got 0"),
        ("iscam", {"n_samples": 2.5}, "n_samples must be a positive integer, got 2.5"),
        ("iscam", {"chunk_size": True}, "chunk_size must be a positive integer, got True"),
        ("smoothgradcam++", {"n_samples": 0}, "n_samples must be a positive integer, got 0"),
        ("smoothgradcam++", {"stdev": -0.1}, "stdev must be a finite number >= 0, got -0.1"),
        ("smoothgradcam++", {"generator": 3}, "generator must be a torch.Generator, got int"),
    ],
)
def test_bad_options_are_clear_errors(model, images, method, options, message):
    with pytest.raises(ValueError) as error:
        explain(model, images, 1, method=method, target_layer="layer1", **options)
    assert str(error.value) == message
    assert count_hooks(model) == 0
