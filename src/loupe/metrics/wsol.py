"""Weakly-supervised object localization (WSOL) metrics.

Following Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
CVPR 2020 (clovaai/wsolevaluation): top-1 and GT-known localization at a fixed box rule,
MaxBoxAccV2 (the best CAM threshold, at IoU 0.3/0.5/0.7, all contours) and PxAP (pixel
average precision against masks). Accuracies are fractions in [0, 1] (wsolevaluation prints
percentages). Box conventions are those of :mod:`loupe.metrics.boxes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loupe.api import normalize
from loupe.metrics.boxes import box_iou, boxes_from_map


def default_cam_thresholds() -> torch.Tensor:
    """0.00, 0.01, ..., 0.99 (wsolevaluation's ``cam_curve_interval`` 0.01), float32."""
    return torch.arange(100, dtype=torch.float64).div(100).float()


def best_box_iou(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> float:
    """The largest IoU between any of ``boxes`` ``(n, 4)`` and any ground-truth box
    ``(G, 4)``; 0 when either is empty."""
    ious = box_iou(boxes, gt_boxes)
    return float(ious.max()) if ious.numel() else 0.0


def gt_known_localization(
    boxes: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor], iou_threshold: float = 0.5
) -> float:
    """GT-known localization accuracy: the fraction of images whose box (from the map of
    the ground-truth class) overlaps some ground-truth box with IoU >= ``iou_threshold``.

    Args:
        boxes: per image, a box ``(4,)`` or candidate boxes ``(n, 4)`` (the best counts).
        gt_boxes: per image, ``(G, 4)`` ground-truth boxes.
    """
    hits = _hits(boxes, gt_boxes, iou_threshold)
    return float(hits.double().mean())


def top1_localization(
    boxes: Sequence[torch.Tensor],
    gt_boxes: Sequence[torch.Tensor],
    predicted_classes: torch.Tensor,
    gt_classes: torch.Tensor,
    iou_threshold: float = 0.5,
) -> float:
    """Top-1 localization accuracy: the fraction of images whose top-1 class is right *and*
    whose box overlaps a ground-truth box with IoU >= ``iou_threshold``.

    ``boxes`` come from the ground-truth class's map: where the top-1 class is right it is
    the same map, and where it is wrong the image fails anyway, so one box per image serves
    both this and :func:`gt_known_localization`.
    """
    hits = _hits(boxes, gt_boxes, iou_threshold)
    predicted = torch.as_tensor(predicted_classes).flatten().cpu()
    truth = torch.as_tensor(gt_classes).flatten().cpu()
    if predicted.shape != truth.shape or predicted.numel() != hits.numel():
        raise ValueError(
            f"predicted_classes ({predicted.numel()}), gt_classes ({truth.numel()}) and boxes "
            f"({hits.numel()}) must have one entry per image"
        )
    return float((hits & (predicted == truth)).double().mean())


@dataclass(frozen=True)
class BoxAccuracy:
    """MaxBoxAcc at several IoU thresholds.

    value: the mean over IoU thresholds of the best accuracy (MaxBoxAccV2 with defaults).
    per_iou: IoU threshold -> the best accuracy over CAM thresholds.
    best_threshold: IoU threshold -> the CAM threshold reaching it (the first one).
    curves: IoU threshold -> accuracy at every CAM threshold.
    """

    value: float
    per_iou: dict[float, float]
    best_threshold: dict[float, float]
    curves: dict[float, tuple[float, ...]]


def max_box_accuracy(
    maps: torch.Tensor | Sequence[torch.Tensor],
    gt_boxes: Sequence[torch.Tensor],
    cam_thresholds: Sequence[float] | torch.Tensor | None = None,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    *,
    multi_contour: bool = True,
) -> BoxAccuracy:
    """MaxBoxAccV2 (defaults) or MaxBoxAcc (``iou_thresholds=(0.5,)``,
    ``multi_contour=False``), Choe et al. CVPR 2020.

    For each CAM threshold ``t`` every map gives boxes (:func:`boxes_from_map`); an image
    counts at ``(t, delta)`` when its best box has IoU >= ``delta`` with a ground-truth box.
    ``MaxBoxAcc(delta) = max_t mean_images(hit)``; the value is its mean over ``delta``.

    Args:
        maps: ``(I, H, W)`` tensor or I maps ``(H_i, W_i)`` of the ground-truth class.
        gt_boxes: I tensors ``(G_i, 4)``.
        cam_thresholds: default :func:`default_cam_thresholds`.
    """
    if len(maps) != len(gt_boxes) or len(maps) == 0:
        raise ValueError(
            f"got {len(maps)} maps and {len(gt_boxes)} ground-truth box sets; give one set "
            "per map, at least one"
        )
    thresholds = default_cam_thresholds() if cam_thresholds is None else torch.as_tensor(
        cam_thresholds, dtype=torch.float32
    ).flatten()
    best = torch.tensor(
        [
            [best_box_iou(boxes, gt) for boxes in boxes_from_map(m, thresholds,
                                                                 multi_contour=multi_contour)]
            for m, gt in zip(maps, gt_boxes, strict=True)
        ],
        dtype=torch.float64,
    )  # (I, T)
    per_iou, best_threshold, curves = {}, {}, {}
    for delta in iou_thresholds:
        accuracy = (best >= delta).double().mean(0)
        index = int(accuracy.argmax())
        per_iou[float(delta)] = float(accuracy[index])
        best_threshold[float(delta)] = round(float(thresholds[index]), 6)
        curves[float(delta)] = tuple(accuracy.tolist())
    value = sum(per_iou.values()) / len(per_iou)
    return BoxAccuracy(value, per_iou, best_threshold, curves)


def pxap(
    maps: torch.Tensor | Sequence[torch.Tensor],
    masks: torch.Tensor | Sequence[torch.Tensor],
    thresholds: Sequence[float] | torch.Tensor | None = None,
    *,
    ignore: int = 255,
    normalized: bool = False,
) -> float:
    """PxAP: the area under the pixel precision-recall curve of maps against binary masks
    (Choe et al. CVPR 2020, wsolevaluation's ``MaskEvaluator``).

    At each threshold ``t`` (and 1.0), pixels with normalised score ``>= t`` are predicted
    foreground; with thresholds in decreasing order and recall starting at 0,
    ``PxAP = sum_t precision(t) * (recall(t) - recall(t_prev))`` (thresholds that predict no
    pixel add nothing). Pixel counts are pooled over all images.

    Args:
        maps: ``(I, H, W)`` or I maps ``(H_i, W_i)``; min-max normalised unless
            ``normalized`` (then they must lie in [0, 1]).
        masks: the same sizes, 1 = object, 0 = background, ``ignore`` left out.
        thresholds: strictly increasing in [0, 1); default :func:`default_cam_thresholds`.

    Returns:
        PxAP in [0, 1].
    """
    if len(maps) != len(masks) or len(maps) == 0:
        raise ValueError(f"got {len(maps)} maps and {len(masks)} masks; give one mask per map")
    edges = default_cam_thresholds() if thresholds is None else torch.as_tensor(
        thresholds, dtype=torch.float32
    ).flatten()
    if edges.numel() == 0 or bool((edges < 0).any() | (edges >= 1).any()):
        raise ValueError(f"thresholds must lie in [0, 1), got {edges.tolist()}")
    if edges.numel() > 1 and not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError("thresholds must be strictly increasing")
    edges = torch.cat([edges, edges.new_ones(1)])
    bins = edges.numel() + 1
    histogram = None
    for scoremap, mask in zip(maps, masks, strict=True):
        if scoremap.shape != mask.shape:
            raise ValueError(
                f"a map of size {tuple(scoremap.shape)} has a mask of size {tuple(mask.shape)}"
            )
        scores = scoremap.float() if normalized else normalize(scoremap.float())
        mask = mask.to(scores.device).long()
        bad = (mask != ignore) & (mask != 0) & (mask != 1)
        if bool(bad.any()):
            raise ValueError(f"masks must hold 0, 1 or {ignore}, found {int(mask[bad][0])}")
        index = torch.bucketize(scores, edges.to(scores.device), right=True)  # edges <= score
        index = index + bins * (mask == 1).long()
        index = torch.where(mask == ignore, 2 * bins, index)
        counts = torch.bincount(index.flatten(), minlength=2 * bins + 1)[: 2 * bins].cpu()
        histogram = counts if histogram is None else histogram + counts
    assert histogram is not None
    negatives, positives = histogram.view(2, bins).double()
    # at_least[j] = pixels scoring >= edges[j], for j = 0..E-1 (bin b holds edges[b-1] <= s).
    tp = positives.flip(0).cumsum(0).flip(0)[1:]
    fp = negatives.flip(0).cumsum(0).flip(0)[1:]
    if float(positives.sum()) == 0:
        raise ValueError("the masks have no object pixel; PxAP is undefined")
    tp, fp = tp.flip(0), fp.flip(0)  # decreasing thresholds: 1.0, t_{n-1}, ..., t_0
    recall = tp / positives.sum()
    predicted = tp + fp
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    gain = recall - torch.cat([recall.new_zeros(1), recall[:-1]])
    return float((precision * gain).sum())


def _hits(
    boxes: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor], iou_threshold: float
) -> torch.Tensor:
    if len(boxes) != len(gt_boxes) or len(boxes) == 0:
        raise ValueError(
            f"got {len(boxes)} predicted and {len(gt_boxes)} ground-truth box sets; give one "
            "per image, at least one"
        )
    return torch.tensor(
        [best_box_iou(b, g) >= iou_threshold for b, g in zip(boxes, gt_boxes, strict=True)]
    )
