"""The streaming WSOL accumulators on hand-built cases (the CLI test checks them against
``loupe.metrics`` on real maps)."""

from __future__ import annotations

import pytest
import torch

from loupe.metrics import (
    default_cam_thresholds,
    inclusive_boxes,
    pair_record,
    pxap,
    pxap_counts,
    pxap_edges,
    pxap_from_counts,
    summarize_localization,
)


def test_edge_boxes_become_inclusive_pixel_boxes() -> None:
    edges = torch.tensor([[0.0, 0.0, 10.0, 4.0], [2.5, 1.0, 3.2, 1.0]])
    assert inclusive_boxes(edges).tolist() == [[0, 0, 9, 3], [2, 1, 3, 1]]


def test_a_map_on_its_box_localizes_and_a_missing_map_does_not() -> None:
    thresholds = default_cam_thresholds()
    scoremap = torch.zeros(20, 20)
    scoremap[5:10, 2:12] = 1.0  # rows 5..9, columns 2..11
    gt = torch.tensor([[2, 5, 11, 9]])
    hit = pair_record(scoremap, gt, thresholds, correct=True)
    assert hit.cam_iou == 1.0 and hit.curve.min() == 1.0
    wrong_class = pair_record(scoremap, gt, thresholds, correct=False)
    missing = pair_record(None, gt, thresholds, correct=True)
    assert missing.cam_iou == 0.0 and missing.curve.max() == 0.0
    summary = summarize_localization([hit, wrong_class, missing], thresholds)
    assert summary["gt_known_loc"] == pytest.approx(2 / 3)
    assert summary["top1_loc"] == pytest.approx(1 / 3)
    assert summary["max_box_acc_v2"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no \\(image, class\\) pair"):
        summarize_localization([], thresholds)


def test_summed_pxap_counts_equal_pooled_pxap() -> None:
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(9, 7, generator=g), torch.rand(5, 6, generator=g)]
    masks = [torch.randint(0, 2, m.shape, generator=g) for m in maps]
    masks[0][0, :] = 255
    edges = pxap_edges(default_cam_thresholds())
    counts = sum(pxap_counts(m, k, edges) for m, k in zip(maps, masks, strict=True))
    assert pxap_from_counts(counts) == pytest.approx(pxap(maps, masks), abs=1e-12)
    with pytest.raises(ValueError, match="no object pixel"):
        pxap_from_counts(pxap_counts(maps[1], torch.zeros(5, 6, dtype=torch.long), edges))
