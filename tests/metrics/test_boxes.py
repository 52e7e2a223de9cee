"""Boxes from maps and box IoU, against hand-drawn maps and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loupe.metrics import EMPTY_BOX, box_from_map, box_iou, boxes_from_map


def test_box_iou_by_hand():
    a = torch.tensor([[0, 0, 1, 1], [0, 0, 3, 3], [5, 5, 4, 4]])  # 2x2, 4x4, empty
    b = torch.tensor([[1, 1, 2, 2], [0, 0, 1, 1], [10, 10, 12, 12]])
    iou = box_iou(a, b)
    assert iou.shape == (3, 3) and iou.dtype == torch.float64
    # 2x2 vs shifted 2x2: intersection 1 pixel, union 4 + 4 - 1 = 7
    assert iou[0].tolist() == [pytest.approx(1 / 7), 1.0, 0.0]
    # 4x4 vs the two 2x2 boxes inside it: 4 / 16
    assert iou[1].tolist() == [0.25, 0.25, 0.0]
    assert iou[2].tolist() == [0.0, 0.0, 0.0]  # the empty box overlaps nothing
    assert box_iou(torch.tensor(EMPTY_BOX), torch.tensor(EMPTY_BOX)).item() == 0.0


def two_blobs() -> torch.Tensor:
    """A 10x12 map: a large plateau (rows 1-3, cols 1-4, value 0.5) and a small peak
    (rows 6-7, cols 8-9, value 1.0); everything else 0.1 (below 20% of the range)."""
    scoremap = torch.full((10, 12), 0.1)
    scoremap[1:4, 1:5] = 0.5
    scoremap[6:8, 8:10] = 1.0
    return scoremap


def test_cam_rule_boxes_the_largest_component():
    # range 0.1..1.0: 20% -> 0.28 on the raw scale; both blobs are above, the plateau has
    # 12 pixels and the peak 4, so the plateau's box (x0=1, y0=1, x1=4, y1=3) wins
    assert box_from_map(two_blobs()).tolist() == [1, 1, 4, 3]
    # above 50% of the range (raw 0.55) only the peak is left
    assert box_from_map(two_blobs(), 0.5).tolist() == [8, 6, 9, 7]
    # a shifted/scaled map gives the same box (min-max normalised first)
    assert box_from_map(3 * two_blobs() - 7).tolist() == [1, 1, 4, 3]


def test_threshold_is_strict():
    scoremap = torch.tensor([[0.0, 0.2, 1.0]])
    assert box_from_map(scoremap, 0.2).tolist() == [2, 0, 2, 0]  # 0.2 is not above 0.2


def test_empty_when_nothing_is_above():
    assert box_from_map(torch.full((4, 4), 3.0)).tolist() == list(EMPTY_BOX)
    assert boxes_from_map(torch.full((4, 4), 3.0), [0.5])[0].shape == (0, 4)


def test_connectivity():
    scoremap = torch.zeros(4, 4)
    scoremap[0, 0] = scoremap[1, 1] = scoremap[2, 2] = 1.0  # a diagonal line
    scoremap[3, 0] = 1.0
    assert box_from_map(scoremap).tolist() == [0, 0, 2, 2]  # 8-connected: one component
    four = boxes_from_map(scoremap, [0.5], connectivity=4)[0]
    assert four.shape == (4, 4)


def test_all_contours_rule():
    boxes = boxes_from_map(two_blobs(), [0.0, 0.3, 0.5, 0.99])
    assert [b.tolist() for b in boxes] == [
        [[1, 1, 4, 3], [8, 6, 9, 7]],  # the floor normalises to 0, not above 0
        [[1, 1, 4, 3], [8, 6, 9, 7]],  # both blobs, in raster order
        [[8, 6, 9, 7]],
        [[8, 6, 9, 7]],
    ]
    largest = boxes_from_map(two_blobs(), [0.3], multi_contour=False)
    assert largest[0].tolist() == [[1, 1, 4, 3]]


def test_errors():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou(torch.zeros(2, 3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="2D"):
        box_from_map(torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        box_from_map(torch.rand(3, 3), connectivity=6)


def test_matches_wsolevaluation_contours():
    """Against wsolevaluation's OpenCV rule (outer contours, boundingRect) on quantised maps.

    wsolevaluation thresholds ``uint8(255 s) > int(255 t)`` and writes x1 = x + w; on maps with
    values k/255 and thresholds between grid steps the pixel sets agree, and loupe's inclusive
    x1 is OpenCV's x + w - 1. (wsolevaluation's RETR_TREE also boxes holes; loupe boxes
    connected components only, so the oracle uses outer contours.)"""
    cv2 = pytest.importorskip("cv2", reason="OpenCV (a grad-cam dependency) is not installed")
    rng = np.random.default_rng(0)
    for _ in range(5):
        noise = torch.from_numpy(rng.random((1, 1, 12, 12))).float()
        smooth = torch.nn.functional.interpolate(noise, size=(48, 40), mode="bilinear")[0, 0]
        levels = ((smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255).round()
        scoremap = levels / 255
        image = levels.to(torch.uint8).numpy()[..., None]
        for level in (30, 90, 150, 200):
            threshold = (level + 0.5) / 255
            _, binary = cv2.threshold(image, level, 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
            expected = sorted(
                (x, y, x + w - 1, y + h - 1) for x, y, w, h in map(cv2.boundingRect, contours)
            )
            got = sorted(map(tuple, boxes_from_map(scoremap, [threshold])[0].tolist()))
            assert got == expected
