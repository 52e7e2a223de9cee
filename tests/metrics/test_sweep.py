"""sweep_confusions == one masks_from_maps + confusion_matrix per threshold; sweep_summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loupe.masks import masks_from_maps
from loupe.metrics import confusion_matrix, default_thresholds, sweep_confusions, sweep_summary


def per_threshold(maps, classes, gt, thresholds, n):
    """The slow reference: build the masks at each threshold alone."""
    return torch.stack([
        sum(
            confusion_matrix(masks_from_maps(maps[i], classes[i], float(t)), gt[i], n)
            for i in range(maps.shape[0])
        )
        for t in thresholds
    ])


def random_case(seed: int, images: int = 3, k: int = 3, h: int = 7, w: int = 9, n: int = 8):
    generator = torch.Generator().manual_seed(seed)
    # integer values 0..4 -> normalised scores on a 1/4, 1/3, 1/2 grid: ties between maps
    # and exactly at thresholds 0.25, 0.5, 0.75, 1.0
    maps = torch.randint(-1, 5, (images, k, h, w), generator=generator).float()
    classes = torch.randint(1, n, (images, k), generator=generator)
    classes[0, -1] = -1  # padding
    gt = torch.randint(0, n, (images, h, w), generator=generator)
    gt[torch.rand(images, h, w, generator=generator) < 0.1] = 255
    return maps, classes, gt


@pytest.mark.parametrize("seed", range(6))
def test_equals_per_threshold_with_ties(seed):
    maps, classes, gt = random_case(seed)
    thresholds = [0.0, 0.2, 0.25, 0.5, 0.75, 0.9, 1.0]
    got = sweep_confusions(maps, classes, gt, thresholds, 8)
    assert got.shape == (7, 8, 8) and got.dtype == torch.int64
    assert torch.equal(got, per_threshold(maps, classes, gt, thresholds, 8))


def test_default_thresholds_and_float_maps():
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(2, 2, 6, 6, generator=generator) ** 3
    classes = torch.tensor([[1, 2], [2, 3]])
    gt = torch.randint(0, 4, (2, 6, 6), generator=generator)
    thresholds = default_thresholds()
    assert thresholds.numel() == 20 and thresholds[1].item() == pytest.approx(0.05)
    got = sweep_confusions(maps, classes, gt, num_classes=4)
    assert torch.equal(got, per_threshold(maps, classes, gt, thresholds.tolist(), 4))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(0, 3),
    thresholds=st.lists(st.sampled_from([0.0, 0.1, 1 / 3, 0.5, 2 / 3, 0.95, 1.0]),
                        min_size=1, max_size=5, unique=True).map(sorted),
)
def test_property_equals_per_threshold(seed, k, thresholds):
    generator = torch.Generator().manual_seed(seed)
    maps = torch.randint(-2, 4, (2, k, 5, 4), generator=generator).float()
    classes = torch.randint(1, 5, (2, k), generator=generator)
    gt = torch.randint(0, 5, (2, 5, 4), generator=generator)
    got = sweep_confusions(maps, classes, gt, thresholds, 5)
    assert torch.equal(got, per_threshold(maps, classes, gt, thresholds, 5))


def test_per_image_and_single_image_forms():
    maps, classes, gt = random_case(7)
    thresholds = [0.1, 0.5]
    stacked = sweep_confusions(maps, classes, gt, thresholds, 8, per_image=True)
    assert stacked.shape == (3, 2, 8, 8)
    assert torch.equal(stacked.sum(0), sweep_confusions(maps, classes, gt, thresholds, 8))
    single = sweep_confusions(maps[1], classes[1], gt[1], thresholds, 8)
    assert torch.equal(single, stacked[1])


def test_errors_are_clear():
    maps, classes, gt = random_case(0)
    with pytest.raises(ValueError, match="strictly increasing"):
        sweep_confusions(maps, classes, gt, [0.5, 0.1], 8)
    with pytest.raises(ValueError, match="map classes must lie in 1..7"):
        sweep_confusions(maps, classes.clamp(min=0), gt, [0.5], 8)  # padding -1 -> class 0
    with pytest.raises(ValueError, match="does not match maps"):
        sweep_confusions(maps, classes, gt[:, :3], [0.5], 8)
    with pytest.raises(ValueError, match="ground-truth label 9"):
        sweep_confusions(maps, classes, gt.masked_fill(gt == 0, 9), [0.5], 8)


def hand_confusions() -> torch.Tensor:
    # mIoU: (3/4 + 4/5) / 2 = 0.775;  1.0;  (2/6 + 2/6) / 2 = 1/3
    return torch.tensor([[[3, 1], [0, 4]], [[4, 0], [0, 4]], [[2, 2], [2, 2]]])


def test_summary_of_hand_built_curve():
    summary = sweep_summary(hand_confusions(), [0.1, 0.2, 0.3], fixed=(0.1, 0.3),
                            spread_range=(0.1, 0.2))
    assert summary.miou == pytest.approx((0.775, 1.0, 1 / 3))
    assert summary.best_miou == 1.0 and summary.best_threshold == 0.2
    assert summary.fixed == pytest.approx({0.1: 0.775, 0.3: 1 / 3})
    assert summary.spread == pytest.approx(0.225)
    assert summary.spread_std == pytest.approx(0.1125)  # population std of two values
    wide = sweep_summary(hand_confusions(), [0.1, 0.2, 0.3], fixed=(), spread_range=(0, 1))
    assert wide.spread == pytest.approx(2 / 3)
    assert wide.spread_std == pytest.approx(np.std([0.775, 1.0, 1 / 3]))
    assert summary.as_dict()["fixed"] == {"0.1": 0.775, "0.3": pytest.approx(1 / 3)}


def test_summary_errors():
    conf = hand_confusions()
    with pytest.raises(ValueError, match="fixed threshold 0.25 is not among"):
        sweep_summary(conf, [0.1, 0.2, 0.3], fixed=(0.25,))
    with pytest.raises(ValueError, match="no swept threshold lies in spread_range"):
        sweep_summary(conf, [0.1, 0.2, 0.3], fixed=(), spread_range=(0.5, 0.9))
    with pytest.raises(ValueError, match="3 thresholds for 2"):
        sweep_summary(conf[:2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no counted pixel"):
        sweep_summary(torch.zeros(1, 2, 2, dtype=torch.long), [0.1], fixed=(), spread_range=(0, 1))


@pytest.mark.parametrize(
    "thresholds",
    [
        [0.5],
        default_thresholds().tolist(),  # the lookup path
        [0.0, 1 / 4096, 0.3, 1.0],  # neighbouring bins, both ends
        [0.1, 0.1 + 1e-5, 0.2],  # two in one bin: bucketize path
        [-0.5, 0.0, 0.5, 1.5],  # outside [0, 1]: bucketize path
        torch.rand(100, generator=torch.Generator().manual_seed(0)).sort().values.tolist(),
    ],
)
def test_count_below_equals_bucketize(thresholds):
    from loupe.metrics.sweep import count_below

    bounds = torch.tensor(thresholds, dtype=torch.float32)
    generator = torch.Generator().manual_seed(len(thresholds))
    scores = torch.rand(30, 120, generator=generator) * 1.2 - 0.1
    scores[0, : bounds.numel()] = bounds  # exact ties: a tie is not "below"
    scores[1, :4] = torch.tensor([float("-inf"), 0.0, 1.0, float("inf")])
    scores[2, :10] = torch.arange(10) / 4096  # bin edges
    assert torch.equal(count_below(scores, bounds), torch.bucketize(scores, bounds))
    double = count_below(scores.double(), bounds.double())
    assert torch.equal(double, torch.bucketize(scores.double(), bounds.double()))


def test_nan_and_inf_maps_are_sanitised_consistently():
    maps = torch.tensor([[[float("nan"), 1.0, 0.5]], [[0.2, float("inf"), 0.1]]])
    classes = torch.tensor([1, 2])
    gt = torch.tensor([[0, 2, 1]])
    # map 1: NaN -> 0, scores [0, 1, .5]; map 2: inf -> the largest float, scores [~0, 1, ~0]
    assert masks_from_maps(maps, classes, 0.3).tolist() == [[0, 1, 1]]
    swept = sweep_confusions(maps, classes, gt, [0.3], 3)[0]
    assert torch.equal(swept, confusion_matrix(masks_from_maps(maps, classes, 0.3), gt, 3))
