"""Score-CAM: a loop-by-loop oracle, chunk and batch invariance, forward count, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from loupe import explain
from loupe.targets import TargetError
from tests.conftest import count_hooks


class Tiny(nn.Module):
    """features (stride 2, 6 channels) -> conv + ReLU -> GAP -> linear; counts its forwards."""

    def __init__(self) -> None:
        super().__init__()
        # no ReLU: signed activations, so the min of each mask matters
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1))
        self.body = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)
        self.forwards = 0
        self.grad_modes: set[bool] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        self.grad_modes.add(torch.is_grad_enabled())
        return self.fc(self.body(self.features(x)).mean((-2, -1)))


def scorecam(model: nn.Module, images: torch.Tensor, targets, **options) -> torch.Tensor:
    """Score-CAM at the ``features`` layer (6 channels, 5x6 at 9x11 input)."""
    return explain(model, images, targets, method="scorecam", target_layer="features", **options)


@pytest.fixture
def model() -> Tiny:
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():
        model.fc.weight.mul_(20)  # spread the scores so the channel softmax is not flat
    return model


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 9, 11, generator=torch.Generator().manual_seed(1))


def scorecam_by_loop(model: nn.Module, images: torch.Tensor, targets: list[list[int]]):
    """Score-CAM one image, one target, one channel at a time (pytorch-grad-cam's recipe)."""
    upsample = nn.UpsamplingBilinear2d(size=images.shape[-2:])
    maps = torch.zeros(len(targets), len(targets[0]), 5, 6)
    with torch.no_grad():
        for b, row in enumerate(targets):
            activation = model.features(images[b : b + 1])[0]  # (C, h, w)
            for j, k in enumerate(row):
                if k < 0:
                    continue
                scores = []
                for c in range(activation.shape[0]):
                    mask = upsample(activation[c][None, None])[0, 0]
                    mask = (mask - mask.min()) / (mask.max() - mask.min() + 1e-8)
                    scores.append(model(images[b : b + 1] * mask)[0, k])
                weights = torch.softmax(torch.stack(scores), dim=0)
                cam = sum(w * a for w, a in zip(weights, activation, strict=True))
                maps[b, j] = cam.clamp(min=0)
    return maps


def test_scorecam_matches_a_loop_oracle(model, images):
    targets = [[0, 3], [2, -1], [4, 4]]
    ours = scorecam(model, images, targets, upsample=False, chunk_size=4)
    expected = scorecam_by_loop(model, images, targets)
    assert ours.shape == (3, 2, 5, 6)
    assert expected[0, 0].amax() > expected[0, 0].amin()
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    assert (ours[1, 1] == 0).all()


def test_scorecam_score_functions_equal_class_targets(model, images):
    by_class = scorecam(model, images, 2, upsample=False)
    by_function = scorecam(model, images, lambda out: out[:, 2], upsample=False, chunk_size=7)
    torch.testing.assert_close(by_function, by_class)


@pytest.mark.parametrize("chunk_size", [1, 5, 18, 1000])
def test_scorecam_does_not_depend_on_chunk_size(model, images, chunk_size):
    reference = scorecam(model, images, [[0, 1], [2, 3], [4, 0]], upsample=False, chunk_size=32)
    maps = scorecam(model, images, [[0, 1], [2, 3], [4, 0]], upsample=False, chunk_size=chunk_size)
    torch.testing.assert_close(maps, reference, rtol=1e-5, atol=1e-7)


def test_scorecam_is_batch_invariant(model, images):
    both = scorecam(model, images, [[0, 1], [2, 3], [4, 0]], upsample=False)
    alone = [
        scorecam(model, images[b : b + 1], [row], upsample=False)
        for b, row in enumerate([[0, 1], [2, 3], [4, 0]])
    ]
    torch.testing.assert_close(both, torch.cat(alone), rtol=1e-5, atol=1e-7)


def test_scorecam_batches_images_channels_and_targets(model, images):
    """One clean forward, then ceil(B * C / chunk_size) masked forwards for all K targets."""
    model.forwards = 0
    scorecam(model, images, [[0, 1, 2], [2, 3, 4], [4, 0, 1]], chunk_size=5)
    assert model.forwards == 1 + math.ceil(3 * 6 / 5)
    assert model.grad_modes == {False}  # gradient-free: no autograd graph is ever recorded


def test_scorecam_leaves_model_and_input_untouched(model, images):
    copy = images.clone()
    maps = scorecam(model, images, 1)
    assert maps.shape == (3, 1, 9, 11) and torch.isfinite(maps).all()
    assert torch.equal(images, copy)
    assert count_hooks(model) == 0
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True, "8"])
def test_scorecam_rejects_a_bad_chunk_size(model, images, chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        scorecam(model, images, 1, chunk_size=chunk_size)
    assert count_hooks(model) == 0


def test_scorecam_rejects_out_of_range_targets(model, images):
    with pytest.raises(TargetError, match="target class 5 is out of range"):
        scorecam(model, images, [[0], [5], [1]])
    assert count_hooks(model) == 0


def test_scorecam_scores_all_zero_channels_with_one_zero_image_forward(model, images):
    """Channels that are zero everywhere have all-zero masks: the loop oracle scores the zero
    image once per such channel; loupe scores it once in all, with the same maps."""
    with torch.no_grad():
        model.features[0].weight[[1, 4]] = 0
        model.features[0].bias[[1, 4]] = 0
    targets = [[0, 3], [2, -1], [4, 4]]
    model.forwards = 0
    ours = scorecam(model, images, targets, upsample=False, chunk_size=5)
    assert model.forwards == 1 + math.ceil(3 * 4 / 5) + 1
    expected = scorecam_by_loop(model, images, targets)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
