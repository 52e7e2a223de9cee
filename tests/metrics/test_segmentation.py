"""Confusion matrices and VOC metrics against hand-built cases and a plain numpy mIoU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loupe.metrics import (
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
)


def numpy_voc_miou(preds: list[np.ndarray], gts: list[np.ndarray], n: int) -> float:
    """VOC definition, from pixel sets: per class IoU = |P & G| / |P | G| over the pixels
    whose ground truth is not 255, pooled over images; mean over classes with |P | G| > 0."""
    inter = np.zeros(n)
    union = np.zeros(n)
    for pred, gt in zip(preds, gts, strict=True):
        valid = gt != 255
        for c in range(n):
            p, g = (pred == c) & valid, (gt == c) & valid
            inter[c] += np.sum(p & g)
            union[c] += np.sum(p | g)
    present = union > 0
    return float(np.mean(inter[present] / union[present]))


def test_hand_built_matrix():
    gt = torch.tensor([[0, 0, 1], [2, 255, 1]])
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    # rows gt, cols pred: (0,0) (0,1) (1,1) (2,2) (1,0); the 255 pixel is left out
    expected = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert torch.equal(confusion_matrix(pred, gt, 3), expected)


def test_metrics_of_hand_built_matrix():
    conf = torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    # class 0: TP 3, FP 0, FN 1 -> 3/4; class 1: TP 4, FP 1, FN 0 -> 4/5; class 2 absent
    iou = iou_per_class(conf)
    assert iou[:2].tolist() == [0.75, 0.8] and math.isnan(iou[2])
    assert mean_iou(conf).item() == pytest.approx(0.775)
    assert precision_per_class(conf)[:2].tolist() == [1.0, 0.8]
    assert recall_per_class(conf)[:2].tolist() == [0.75, 1.0]
    assert pixel_accuracy(conf).item() == pytest.approx(7 / 8)


def test_class_predicted_but_absent_counts_as_zero():
    conf = torch.tensor([[2, 2], [0, 0]])  # class 1 predicted, never true: IoU 0, counted
    assert iou_per_class(conf).tolist() == [0.5, 0.0]
    assert mean_iou(conf).item() == 0.25


@pytest.mark.parametrize("seed", range(3))
def test_mean_iou_matches_numpy_voc_definition(seed):
    rng = np.random.default_rng(seed)
    n = 6
    preds, gts = [], []
    for _ in range(4):
        h, w = rng.integers(3, 12, size=2)
        gt = rng.integers(0, n - 1, size=(h, w))  # class n-1 never in gt
        gt[rng.random((h, w)) < 0.1] = 255
        pred = np.where(rng.random((h, w)) < 0.6, np.where(gt == 255, 0, gt),
                        rng.integers(0, n - 2, size=(h, w)))  # n-2 rarely, n-1 never
        preds.append(pred)
        gts.append(gt)
    total = sum(
        confusion_matrix(torch.from_numpy(p), torch.from_numpy(g), n)
        for p, g in zip(preds, gts, strict=True)
    )
    assert mean_iou(total).item() == pytest.approx(numpy_voc_miou(preds, gts, n), abs=1e-12)


def test_batch_gives_one_matrix_per_image():
    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (3, 5, 6), generator=generator)
    gt = torch.randint(0, 4, (3, 5, 6), generator=generator)
    gt[0, 0] = 255
    batched = confusion_matrix(pred, gt, 4)
    assert batched.shape == (3, 4, 4) and batched.dtype == torch.int64
    for i in range(3):
        assert torch.equal(batched[i], confusion_matrix(pred[i], gt[i], 4))
    assert int(batched.sum()) == 3 * 30 - 6  # the ignored row of image 0


def test_metrics_broadcast_over_leading_dims():
    conf = torch.stack([torch.eye(3, dtype=torch.long) * 5, torch.ones(3, 3, dtype=torch.long)])
    assert mean_iou(conf).tolist() == [1.0, pytest.approx(1 / 5)]


def test_errors_are_clear():
    with pytest.raises(ValueError, match="same shape"):
        zeros = torch.zeros(2, 3, dtype=torch.long)
        confusion_matrix(zeros[:, :2], zeros, 3)
    with pytest.raises(ValueError, match="ground-truth label 7 is outside 0..2"):
        confusion_matrix(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 7]]), 3)
    with pytest.raises(ValueError, match="predicted label 255 .*map ignore"):
        confusion_matrix(torch.tensor([[0, 255]]), torch.tensor([[0, 1]]), 3)
    with pytest.raises(ValueError, match="integer labels"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, N\)"):
        mean_iou(torch.zeros(3, 2))


def test_prediction_at_ignored_pixel_is_not_checked():
    # a 255 prediction where the ground truth is 255 is fine (nothing is counted there)
    conf = confusion_matrix(torch.tensor([[255, 1]]), torch.tensor([[255, 1]]), 2)
    assert conf.tolist() == [[0, 0], [0, 1]]
