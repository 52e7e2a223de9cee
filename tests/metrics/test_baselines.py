"""The model-free baselines: they never call the model and score what the data gives away."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import loupe
from loupe.masks import masks_from_maps
from loupe.metrics import confusion_matrix, iou_per_class, mean_iou, sweep_confusions
from tests.conftest import count_hooks


class Untouchable(nn.Module):
    """A model whose forward fails: the baselines must not need it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a model-free baseline called the model")


def test_registered_without_layer():
    for name in ("baseline-background", "baseline-gaussian"):
        spec = loupe.get_method(name)
        assert not spec.uses_layer and not spec.stochastic


def test_background_maps_are_zero_and_mask_to_background():
    model = Untouchable()
    images = torch.rand(2, 3, 8, 10)
    maps = loupe.explain(model, images, [[1, 2], [3, -1]], method="baseline-background")
    assert maps.shape == (2, 2, 8, 10) and not maps.any()
    assert count_hooks(model) == 0 and model.training
    classes = torch.tensor([[1, 2], [3, 4]])
    for threshold in (0.0, 0.5, 0.95):
        assert not masks_from_maps(maps, classes, threshold).any()


def test_background_miou_is_background_iou_over_classes():
    gt = torch.zeros(1, 8, 10, dtype=torch.long)
    gt[0, 2:6, 3:7] = 5  # 16 object pixels of 80
    maps = loupe.explain(Untouchable(), torch.rand(1, 3, 8, 10), 5, method="baseline-background")
    conf = sweep_confusions(maps, torch.tensor([[5]]), gt, [0.2], num_classes=6)[0]
    # background IoU 64/80; class 5 IoU 0; other classes absent: mIoU = 0.8 / 2
    assert iou_per_class(conf)[0].item() == pytest.approx(0.8)
    assert mean_iou(conf).item() == pytest.approx(0.4)


def test_gaussian_by_hand():
    images = torch.rand(3, 3, 9, 9)
    maps = loupe.explain(Untouchable(), images, None, method="baseline-gaussian")
    assert maps.shape == (3, 1, 9, 9)  # unbound targets: one map per image, no model call
    sigma = 9 / 4
    assert maps[0, 0, 4, 4].item() == pytest.approx(1.0)
    assert maps[0, 0, 4, 0].item() == pytest.approx(math.exp(-(4**2) / (2 * sigma**2)))
    assert maps[2, 0, 0, 0].item() == pytest.approx(math.exp(-(32) / (2 * sigma**2)))
    assert torch.equal(maps[0], maps[2])  # the same map for every image
    assert torch.equal(maps[0, 0], maps[0, 0].flip(0)) and torch.equal(maps[0, 0], maps[0, 0].T)


def test_gaussian_options_and_padding():
    images = torch.rand(2, 3, 6, 12)
    maps = loupe.explain(Untouchable(), images, [[1, 2], [3, -1]], method="baseline-gaussian",
                         sigma=0.5)
    assert not maps[1, 1].any()  # padding target: zero map
    sigma = 0.5 * 6  # a fraction of the shorter side
    centre_y, centre_x = 2.5, 5.5
    expected = math.exp(-((0 - centre_y) ** 2 + (11 - centre_x) ** 2) / (2 * sigma**2))
    assert maps[0, 0, 0, 11].item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="sigma must be a positive fraction"):
        loupe.explain(Untouchable(), images, 1, method="baseline-gaussian", sigma=0)


def test_gaussian_centre_mask_on_centred_object():
    gt = torch.zeros(1, 16, 16, dtype=torch.long)
    gt[0, 4:12, 4:12] = 3
    maps = loupe.explain(Untouchable(), torch.rand(1, 3, 16, 16), 3, method="baseline-gaussian")
    mask = masks_from_maps(maps[0], torch.tensor([3]), 0.5)
    conf = confusion_matrix(mask, gt[0], 4)
    assert iou_per_class(conf)[3].item() > 0.5  # a centred object is half-found for free
