"""Occlusion against captum's ``Occlusion``, by hand on a linear model, and its errors."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from loupe import explain
from loupe.methods.occlusion import window_starts
from tests.conftest import count_hooks
from tests.methods.test_cam_family import assert_agree

TARGETS = [[3, 7], [5, 1]]


@pytest.fixture
def model(seeded_resnet18) -> torch.nn.Module:
    return seeded_resnet18


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def captum_maps(model, images, window, stride, baseline) -> torch.Tensor:
    """(B, K, 3, H, W) captum attributions for TARGETS, one call per target column."""
    occlusion = Occlusion(model)
    columns = [
        occlusion.attribute(images, target=[row[k] for row in TARGETS],
                            sliding_window_shapes=(3, *window), strides=(3, *stride),
                            baselines=baseline, perturbations_per_eval=16)
        for k in range(len(TARGETS[0]))
    ]
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize(
    ("window", "stride", "baseline"),
    [
        ((8, 8), (5, 5), 0.0),  # the last window is clipped at both sides
        ((6, 9), (4, 7), 0.5),  # non-square window and stride, a constant baseline
        ((32, 7), (1, 7), None),  # a window spanning the height: one row of windows
    ],
)
def test_occlusion_matches_captum(model, images, window, stride, baseline):
    ours = explain(model, images, TARGETS, method="occlusion", window=window, stride=stride,
                   baseline=baseline, chunk_size=13)
    peer = captum_maps(model, images, window, stride, 0.0 if baseline is None else baseline)
    # captum's window covers all channels, so every channel holds the same map
    torch.testing.assert_close(peer, peer[:, :, :1].expand_as(peer))
    assert_agree(ours, peer[:, :, 0])
    assert count_hooks(model) == 0


def test_occlusion_with_a_per_channel_baseline_matches_captum(model, images):
    baseline = torch.tensor([0.2, -0.1, 0.4])[:, None, None]
    ours = explain(model, images, TARGETS, method="occlusion", window=10, stride=6,
                   baseline=baseline)
    peer = captum_maps(model, images, (10, 10), (6, 6), baseline[None])
    assert_agree(ours, peer[:, :, 0])
    # the baseline matters: a zero baseline gives other maps
    zeros = explain(model, images, TARGETS, method="occlusion", window=10, stride=6)
    assert (zeros - peer[:, :, 0]).abs().amax() > 1e-2 * peer.abs().amax()


class Weighted(nn.Module):
    """score_k = sum_ij w_k[i, j] * x[0, i, j]: occluding a window with 0 drops the score by
    the window's sum of w_k x."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = nn.Parameter(weights)  # (K, H, W)
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return torch.einsum("khw,bhw->bk", self.weights, x[:, 0])


def test_occlusion_by_hand_on_a_linear_model():
    # 1x4 image, window 2, stride 1: windows [0,1], [1,2], [2,3]
    weights = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[0.0, 0.0, 0.0, 10.0]]])
    model = Weighted(weights)
    x = torch.ones(1, 1, 1, 4)
    maps = explain(model, x, [[0, 1]], method="occlusion", window=(1, 2), stride=1)
    # target 0: window drops 3, 5, 7; pixel 0 in window 1, pixel 1 in windows 1-2, ...
    torch.testing.assert_close(maps[0, 0, 0], torch.tensor([3.0, 4.0, 6.0, 7.0]))
    # target 1: only pixel 3 counts, in window 3 alone (drop 10)
    torch.testing.assert_close(maps[0, 1, 0], torch.tensor([0.0, 0.0, 5.0, 10.0]))


def test_occlusion_batches_images_and_windows():
    model = Weighted(torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    model.forwards = 0
    maps = explain(model, x, [[0, 1]] * 3, method="occlusion", window=3, stride=2,
                   chunk_size=7)
    windows = 3 * 3  # starts 0, 2, 4 (the last clipped to 2 pixels)
    assert model.forwards == 1 + math.ceil(3 * windows / 7)
    alone = explain(model, x[1:2], [[0, 1]], method="occlusion", window=3, stride=2,
                    chunk_size=4)
    torch.testing.assert_close(alone, maps[1:2])


def test_window_starts_follow_captums_rule():
    assert window_starts(32, 8, 5).tolist() == [0, 5, 10, 15, 20, 25]
    assert window_starts(10, 10, 3).tolist() == [0]
    assert window_starts(9, 3, 3).tolist() == [0, 3, 6]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 40}, "window height 40 is larger than the image height 32"),
        ({"window": (4, 33), "stride": 1}, "window width 33 is larger than the image width 32"),
        ({"window": 4, "stride": 5}, "stride height 5 is larger than the window height 4: "
                                     "some pixels would never be occluded"),
        ({"window": (3,)}, "window must be an int or a pair (height, width), got (3,)"),
        ({"window": 0}, "window must be a positive integer, got 0"),
        ({"stride": (2, 1.5)}, "stride must be a positive integer, got 1.5"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer, got 0"),
        ({"baseline": "grey"}, "baseline must be 'mean', a number or a tensor; got 'grey'"),
    ],
)
def test_bad_options_are_clear_errors(model, images, options, message):
    with pytest.raises(ValueError) as error:
        explain(model, images, 1, method="occlusion", **options)
    assert str(error.value) == message
    assert count_hooks(model) == 0
