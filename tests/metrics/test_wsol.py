"""WSOL metrics against hand-built maps, boxes and masks (answers derived in comments)."""

from __future__ import annotations

import pytest
import torch

from loupe.metrics import (
    default_cam_thresholds,
    gt_known_localization,
    max_box_accuracy,
    pxap,
    top1_localization,
)


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.long)


def test_gt_known_and_top1_by_hand():
    predicted = [boxes([0, 0, 3, 3]), boxes([0, 0, 1, 1]), boxes([5, 5, 9, 9])]
    truth = [boxes([0, 0, 3, 3]), boxes([0, 0, 3, 3]), boxes([0, 0, 1, 1], [5, 5, 8, 8])]
    # IoUs: 1.0; 4/16 = 0.25; best of (0, 16/25 = 0.64) -> hits at 0.5: yes, no, yes
    assert gt_known_localization(predicted, truth) == pytest.approx(2 / 3)
    assert gt_known_localization(predicted, truth, iou_threshold=0.7) == pytest.approx(1 / 3)
    # top-1 classes right for images 0 and 1 only: hit & right only for image 0
    top1 = top1_localization(predicted, truth, torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]))
    assert top1 == pytest.approx(1 / 3)


def ringed_square() -> torch.Tensor:
    """10x10: inner square rows/cols 3-6 at 1.0, a ring rows/cols 2-7 around it at 0.5."""
    scoremap = torch.zeros(10, 10)
    scoremap[2:8, 2:8] = 0.5
    scoremap[3:7, 3:7] = 1.0
    return scoremap


def test_max_box_accuracy_by_hand():
    maps = torch.stack([ringed_square(), torch.full((10, 10), 0.3)])
    gt = [boxes([3, 3, 6, 6]), boxes([0, 0, 9, 9])]
    # image 0: t=0 and t=0.4 box the ring (2,2,7,7): IoU 16/36 = 0.44; t=0.6 boxes the
    # square: IoU 1. Image 1 is constant: no box at any threshold, never a hit.
    result = max_box_accuracy(maps, gt, cam_thresholds=[0.0, 0.4, 0.6])
    assert result.curves[0.3] == (0.5, 0.5, 0.5)
    assert result.curves[0.5] == (0.0, 0.0, 0.5)
    assert result.per_iou == {0.3: 0.5, 0.5: 0.5, 0.7: 0.5}
    assert result.best_threshold == {0.3: 0.0, 0.5: 0.6, 0.7: 0.6}
    assert result.value == 0.5


def test_all_contours_find_the_small_object():
    scoremap = torch.zeros(10, 10)
    scoremap[0:5, 0:5] = 1.0  # a large blob away from the object
    scoremap[7:9, 7:9] = 1.0  # a small blob on it
    gt = [boxes([7, 7, 8, 8])]
    multi = max_box_accuracy([scoremap], gt, [0.5], iou_thresholds=(0.5,))
    single = max_box_accuracy([scoremap], gt, [0.5], iou_thresholds=(0.5,), multi_contour=False)
    assert multi.value == 1.0 and single.value == 0.0


def test_default_cam_thresholds():
    thresholds = default_cam_thresholds()
    assert thresholds.numel() == 100 and thresholds[0] == 0
    assert thresholds[-1] == pytest.approx(0.99)


def test_pxap_by_hand():
    scoremap = torch.tensor([[0.9, 0.6, 0.95], [0.3, 0.0, 0.2]])
    mask = torch.tensor([[1, 0, 255], [1, 0, 255]])  # third column ignored
    # thresholds 1.0, 0.5, 0.0 (decreasing): >=1.0 predicts nothing; >=0.5: {0.9 +, 0.6 -}
    # P 1/2, R 1/2; >=0: P 2/4, R 1 -> 0.5 * 0.5 + 0.5 * 0.5 = 0.5
    assert pxap([scoremap], [mask], [0.0, 0.5], normalized=True) == pytest.approx(0.5)
    # adding 0.8: >=0.8 {0.9 +}: P 1, R 1/2 -> 1 * 0.5 + 0.5 * 0 + 0.5 * 0.5 = 0.75
    assert pxap([scoremap], [mask], [0.0, 0.5, 0.8], normalized=True) == pytest.approx(0.75)


def test_pxap_normalises_each_map():
    scoremap = torch.tensor([[0.9, 0.6], [0.3, 0.0]])
    mask = torch.tensor([[1, 0], [1, 0]])
    raw = pxap([scoremap], [mask], [0.0, 0.5, 0.8], normalized=True)
    assert pxap([5 * scoremap + 2], [mask], [0.0, 0.5, 0.8]) == pytest.approx(
        pxap([scoremap / 0.9], [mask], [0.0, 0.5, 0.8], normalized=True)
    )
    assert raw == pytest.approx(0.75)


def test_pxap_equals_sklearn_average_precision_on_a_grid():
    """With every score on the threshold grid, PxAP is the exact step-wise AP."""
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed")
    generator = torch.Generator().manual_seed(0)
    grid = torch.cat([torch.arange(10, dtype=torch.float64).div(10).float(), torch.ones(1)])
    maps = grid[torch.randint(0, 11, (3, 8, 8), generator=generator)]
    masks = (torch.rand(3, 8, 8, generator=generator) < maps * 0.8 + 0.1).long()
    masks[0, 0] = 255
    ours = pxap(maps, masks, grid[:-1], normalized=True)
    keep = masks != 255
    expected = metrics.average_precision_score(masks[keep].numpy(), maps[keep].numpy())
    assert ours == pytest.approx(expected, abs=1e-12)


def test_errors():
    scoremap = torch.rand(4, 4)
    with pytest.raises(ValueError, match="one set per map"):
        max_box_accuracy([scoremap], [])
    with pytest.raises(ValueError, match="one mask per map"):
        pxap([scoremap], [])
    with pytest.raises(ValueError, match="masks must hold 0, 1 or 255, found 2"):
        pxap([scoremap], [torch.full((4, 4), 2)])
    with pytest.raises(ValueError, match="no object pixel"):
        pxap([scoremap], [torch.zeros(4, 4, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"thresholds must lie in \[0, 1\)"):
        pxap([scoremap], [torch.ones(4, 4, dtype=torch.long)], [0.5, 1.0])
    with pytest.raises(ValueError, match="a map of size"):
        pxap([scoremap], [torch.ones(3, 4, dtype=torch.long)])
    with pytest.raises(ValueError, match="one entry per image"):
        top1_localization([boxes([0, 0, 1, 1])], [boxes([0, 0, 1, 1])], torch.tensor([1, 2]),
                          torch.tensor([1, 2]))
