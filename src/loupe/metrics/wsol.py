"""Weakly-supervised object localization (WSOL) metrics.

Following Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
CVPR 2020 (clovaai/wsolevaluation): top-1 and GT-known localization at a fixed box rule,
MaxBoxAccV2 (the best CAM threshold, at IoU 0.3/0.5/0.7, all contours) and PxAP (pixel
average precision against masks). Accuracies are fractions in [0, 1] (wsolevaluation prints
percentages). Box conventions are those of :mod:`loupe.metrics.boxes`.

The same figures can be accumulated one map at a time, so that a data set never has to fit in
memory and ``torchrun`` ranks can add up their parts: :func:`pair_record` and
:func:`summarize_localization` (top-1, GT-known, MaxBoxAccV2), :func:`pxap_counts` and
:func:`pxap_from_counts` (PxAP). A *pair* is one (image, ground-truth class) with boxes of that
class; its map is that class's map. For single-label sets (CUB) a pair is an image, as in the
paper; for multi-label sets every class of an image counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loupe.masks.normalize import normalize
from loupe.metrics.boxes import box_from_map, box_iou, boxes_from_map
from loupe.metrics.localization import GuessRecord


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
    return box_accuracy(best, thresholds, iou_thresholds)


def box_accuracy(
    best_ious: torch.Tensor, cam_thresholds: torch.Tensor,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
) -> BoxAccuracy:
    """MaxBoxAcc from ``(I, T)`` best box IoUs of ``I`` maps at ``T`` CAM thresholds: per IoU
    threshold ``delta``, the best over CAM thresholds of the fraction of maps with IoU >=
    ``delta`` (and the first CAM threshold reaching it); the value is their mean."""
    per_iou, best_threshold, curves = {}, {}, {}
    for delta in iou_thresholds:
        accuracy = (best_ious >= delta).double().mean(0)
        index = int(accuracy.argmax())
        per_iou[float(delta)] = float(accuracy[index])
        best_threshold[float(delta)] = round(float(cam_thresholds[index]), 6)
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
    histogram = None
    for scoremap, mask in zip(maps, masks, strict=True):
        mask = torch.as_tensor(mask)
        bad = (mask != ignore) & (mask != 0) & (mask != 1)
        if bool(bad.any()):
            raise ValueError(f"masks must hold 0, 1 or {ignore}, found {int(mask[bad][0])}")
        counts = pxap_counts(scoremap, mask, edges, ignore, normalized=normalized)
        histogram = counts if histogram is None else histogram + counts
    assert histogram is not None
    return pxap_from_counts(histogram)


def pxap_edges(cam_thresholds: torch.Tensor) -> torch.Tensor:
    """The score edges of PxAP's histogram: the thresholds and 1.0."""
    return torch.cat([cam_thresholds.float(), torch.ones(1)])


def pxap_counts(
    scoremap: torch.Tensor, mask: torch.Tensor, edges: torch.Tensor, ignore: int = 255, *,
    normalized: bool = False,
) -> torch.Tensor:
    """``(2, E + 1)`` int64 pixel counts of a map (min-max normalised unless ``normalized``)
    by score bin (bin ``b`` holds ``edges[b-1] <= score < edges[b]``), row 0 background and
    row 1 object pixels of ``mask`` (1 object, 0 background, ``ignore`` left out); on the CPU.
    Sums over maps give the pooled histogram of :func:`pxap`, so a data set can be scored one
    map at a time (and ranks can add up their parts)."""
    if scoremap.shape != mask.shape:
        raise ValueError(f"a map of size {tuple(scoremap.shape)} has a mask of size "
                         f"{tuple(mask.shape)}")
    scores = scoremap.float() if normalized else normalize(scoremap.float())
    mask = mask.to(scores.device).long()
    bins = edges.numel() + 1
    index = torch.bucketize(scores, edges.to(scores.device), right=True)  # edges <= score
    index = index + bins * (mask == 1).long()
    index = torch.where(mask == ignore, 2 * bins, index)
    counts = torch.bincount(index.flatten(), minlength=2 * bins + 1)[: 2 * bins]
    return counts.view(2, bins).cpu()


def pxap_from_counts(counts: torch.Tensor) -> float:
    """PxAP from summed :func:`pxap_counts`: ``sum_t precision(t) * (recall(t) -
    recall(t_prev))`` over decreasing thresholds (a ValueError without object pixels)."""
    negatives, positives = counts.double()
    if float(positives.sum()) == 0:
        raise ValueError("the masks have no object pixel; PxAP is undefined")
    # at_least[j] = pixels scoring >= edges[j], for j = 0..E-1 (bin b holds edges[b-1] <= s);
    # flipped: decreasing thresholds 1.0, t_{n-1}, ..., t_0
    tp = positives.flip(0).cumsum(0).flip(0)[1:].flip(0)
    fp = negatives.flip(0).cumsum(0).flip(0)[1:].flip(0)
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


# --- streamed: one (image, class) pair at a time -------------------------------------------


@dataclass(frozen=True)
class PairRecord:
    """One pair's localization facts.

    curve: ``(T,)`` float64, the best IoU of the map's boxes (all contours) with a
        ground-truth box at each CAM threshold (for MaxBoxAccV2).
    cam_iou: the IoU of CAM's box (largest component at ``box_threshold``) with the best
        matching ground-truth box (for top-1 and GT-known localization).
    correct: whether the classifier's top-1 class is the pair's class.
    label: the pair's class (-1 when not recorded).
    guesses: the pair against the image's ranked guesses, for CAM's ILSVRC localization error
        (:mod:`loupe.metrics.localization`), or None.
    """

    curve: torch.Tensor
    cam_iou: float
    correct: bool
    label: int = -1
    guesses: GuessRecord | None = None


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
    curve = torch.tensor([best_box_iou(boxes, gt_boxes)
                          for boxes in boxes_from_map(scoremap, cam_thresholds)],
                         dtype=torch.float64)
    cam_box = box_from_map(scoremap, box_threshold)
    return PairRecord(curve, best_box_iou(cam_box[None], gt_boxes), correct)


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
    accuracy = box_accuracy(curves, cam_thresholds, iou_thresholds)
    hits = cam >= iou
    return {
        "pairs": len(records),
        "top1_loc": float((hits & correct).double().mean()),
        "gt_known_loc": float(hits.double().mean()),
        "iou": iou,
        "max_box_acc_v2": accuracy.value,
        "max_box_acc_per_iou": accuracy.per_iou,
        "max_box_acc_best_threshold": accuracy.best_threshold,
    }
