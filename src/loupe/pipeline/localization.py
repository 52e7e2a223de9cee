"""WSOL metrics accumulated one map at a time (so a data set never has to fit in memory, and
ranks can add up their parts).

The rules are those of :mod:`loupe.metrics.wsol` (Choe et al., "Evaluating Weakly Supervised
Object Localization Methods Right", CVPR 2020); the tests check that the accumulated numbers
equal :func:`loupe.metrics.max_box_accuracy`, :func:`~loupe.metrics.gt_known_localization`,
:func:`~loupe.metrics.top1_localization` and :func:`~loupe.metrics.pxap` on the same maps.

A *pair* is one (image, ground-truth class) with boxes of that class: its map is that class's
map. For single-label sets (CUB) a pair is an image, as in the paper; for multi-label sets
every class of an image counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loupe.api import normalize
from loupe.metrics.boxes import box_from_map, box_iou, boxes_from_map


def inclusive_boxes(edge_boxes: torch.Tensor) -> torch.Tensor:
    """Data-set boxes in edge coordinates (``x1`` one past the last pixel, see
    :mod:`loupe.data.base`) -> the inclusive int64 pixel boxes of :mod:`loupe.metrics.boxes`."""
    boxes = edge_boxes.reshape(-1, 4).double()
    start = boxes[:, :2].floor()
    end = boxes[:, 2:].ceil() - 1
    return torch.cat([start, torch.maximum(end, start)], dim=1).long()


@dataclass(frozen=True)
class PairRecord:
    """One pair's localization facts.

    curve: ``(T,)`` float64, the best IoU of the map's boxes (all contours) with a
        ground-truth box at each CAM threshold (for MaxBoxAccV2).
    cam_iou: the IoU of CAM's box (largest component at ``box_threshold``) with the best
        matching ground-truth box (for top-1 and GT-known localization).
    correct: whether the classifier's top-1 class is the pair's class.
    """

    curve: torch.Tensor
    cam_iou: float
    correct: bool


def pair_record(
    scoremap: torch.Tensor | None,
    gt_boxes: torch.Tensor,
    cam_thresholds: torch.Tensor,
    *,
    box_threshold: float = 0.2,
    correct: bool,
) -> PairRecord:
    """The :class:`PairRecord` of a ``(H, W)`` map against inclusive ``(G, 4)`` ground-truth
    boxes; ``scoremap=None`` (no map for the class) scores IoU 0 everywhere."""
    if scoremap is None:
        return PairRecord(torch.zeros(cam_thresholds.numel(), dtype=torch.float64), 0.0, correct)
    curve = torch.tensor([_best_iou(boxes, gt_boxes)
                          for boxes in boxes_from_map(scoremap, cam_thresholds)],
                         dtype=torch.float64)
    cam_box = box_from_map(scoremap, box_threshold)
    return PairRecord(curve, _best_iou(cam_box[None], gt_boxes), correct)


def _best_iou(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> float:
    ious = box_iou(boxes, gt_boxes)
    return float(ious.max()) if ious.numel() else 0.0


def summarize_localization(
    records: Sequence[PairRecord],
    cam_thresholds: torch.Tensor,
    *,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    iou: float = 0.5,
) -> dict[str, object]:
    """Top-1 loc, GT-known loc (at IoU ``iou``, CAM's box rule) and MaxBoxAccV2 (best CAM
    threshold per IoU threshold in ``iou_thresholds``, then their mean) over ``records``."""
    if not records:
        raise ValueError("no (image, class) pair with ground-truth boxes to localize")
    curves = torch.stack([r.curve for r in records])  # (P, T)
    cam = torch.tensor([r.cam_iou for r in records], dtype=torch.float64)
    correct = torch.tensor([r.correct for r in records])
    per_iou, best_threshold = {}, {}
    for delta in iou_thresholds:
        accuracy = (curves >= delta).double().mean(0)
        index = int(accuracy.argmax())
        per_iou[float(delta)] = float(accuracy[index])
        best_threshold[float(delta)] = round(float(cam_thresholds[index]), 6)
    hits = cam >= iou
    return {
        "pairs": len(records),
        "top1_loc": float((hits & correct).double().mean()),
        "gt_known_loc": float(hits.double().mean()),
        "iou": iou,
        "max_box_acc_v2": sum(per_iou.values()) / len(per_iou),
        "max_box_acc_per_iou": per_iou,
        "max_box_acc_best_threshold": best_threshold,
    }


def pxap_edges(cam_thresholds: torch.Tensor) -> torch.Tensor:
    """The score edges of PxAP's histogram: the thresholds and 1.0."""
    return torch.cat([cam_thresholds.float(), torch.ones(1)])


def pxap_counts(
    scoremap: torch.Tensor, mask: torch.Tensor, edges: torch.Tensor, ignore: int = 255
) -> torch.Tensor:
    """``(2, E + 1)`` int64 pixel counts of a min-max normalised map by score bin (bin ``b``
    holds ``edges[b-1] <= score < edges[b]``), row 0 background and row 1 object pixels of
    ``mask`` (1 object, 0 background, ``ignore`` left out); on the CPU. Sums over maps give
    the pooled histogram of :func:`loupe.metrics.pxap`."""
    if scoremap.shape != mask.shape:
        raise ValueError(f"a map of size {tuple(scoremap.shape)} has a mask of size "
                         f"{tuple(mask.shape)}")
    scores = normalize(scoremap.float())
    mask = mask.to(scores.device).long()
    bins = edges.numel() + 1
    index = torch.bucketize(scores, edges.to(scores.device), right=True)
    index = index + bins * (mask == 1).long()
    index = torch.where(mask == ignore, 2 * bins, index)
    counts = torch.bincount(index.flatten(), minlength=2 * bins + 1)[: 2 * bins]
    return counts.view(2, bins).cpu()


def pxap_from_counts(counts: torch.Tensor) -> float:
    """PxAP from the summed :func:`pxap_counts`: ``sum_t precision(t) * (recall(t) -
    recall(t_prev))`` over decreasing thresholds."""
    negatives, positives = counts.double()
    if float(positives.sum()) == 0:
        raise ValueError("the masks have no object pixel; PxAP is undefined")
    tp = positives.flip(0).cumsum(0).flip(0)[1:].flip(0)
    fp = negatives.flip(0).cumsum(0).flip(0)[1:].flip(0)
    recall = tp / positives.sum()
    predicted = tp + fp
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    gain = recall - torch.cat([recall.new_zeros(1), recall[:-1]])
    return float((precision * gain).sum())
