"""Semantic-segmentation metrics from confusion matrices (the PASCAL VOC protocol).

A confusion matrix ``C`` is ``(N, N)`` int64 with rows = ground truth and columns =
prediction: ``C[g, p]`` counts pixels of true class ``g`` predicted as ``p``. Pixels whose
ground truth is ``ignore`` (255) are not counted. Matrices add up over images, so a data set's
matrix is the sum of its images' matrices, and every metric below takes ``(..., N, N)``.
"""

from __future__ import annotations

import torch


def confusion_matrix(
    pred: torch.Tensor, gt: torch.Tensor, num_classes: int, ignore: int = 255
) -> torch.Tensor:
    """Confusion matrix of predicted against ground-truth label maps.

    Args:
        pred: ``(H, W)`` or ``(B, H, W)`` integer predictions in ``[0, num_classes)``.
        gt: the same shape, integer labels in ``[0, num_classes)`` or ``ignore``.
        num_classes: N, background included (21 for VOC).
        ignore: ground-truth label that is left out.

    Returns:
        ``(N, N)`` int64 for one image, or ``(B, N, N)``, one matrix per image, for a batch
        (sum over dim 0 for the batch's matrix); on the inputs' device. Counted with a single
        ``torch.bincount`` over ``(image, gt, pred)``.
    """
    if pred.shape != gt.shape or pred.dim() not in (2, 3):
        raise ValueError(
            f"pred and gt must have the same shape (H, W) or (B, H, W), got "
            f"{tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    if pred.is_floating_point() or gt.is_floating_point():
        raise ValueError(f"pred and gt must hold integer labels, got {pred.dtype}, {gt.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    rows = ground_truth_rows(gt.to(pred.device), num_classes, ignore)
    pred = torch.where(rows == num_classes, 0, pred.long())  # nothing counted where ignored
    low, high = _extremes(pred)
    if low < 0 or high >= num_classes:
        value = low if low < 0 else high
        raise ValueError(
            f"predicted label {value} is outside 0..{num_classes - 1} at a pixel with ground "
            "truth; map ignore/unsure predictions to a class before evaluating"
        )
    batched = pred.dim() == 3
    if not batched:
        pred, rows = pred[None], rows[None]
    images = pred.shape[0]
    cells = (num_classes + 1) * num_classes  # row N collects the ignored pixels
    index = rows * num_classes
    index += pred
    index += torch.arange(images, device=pred.device).view(-1, 1, 1) * cells
    counts = torch.bincount(index.flatten(), minlength=images * cells)
    matrices = counts.view(images, num_classes + 1, num_classes)[:, :num_classes]
    return matrices if batched else matrices[0]


def ground_truth_rows(
    gt: torch.Tensor, num_classes: int, ignore: int = 255, *, dtype: torch.dtype = torch.long
) -> torch.Tensor:
    """``gt`` as row indices (``dtype``) of a confusion matrix with an extra row: labels stay,
    ``ignore`` becomes ``num_classes`` (a row that is dropped). A ValueError names the first
    label that is neither a class nor ``ignore``."""
    if gt.is_floating_point():
        raise ValueError(f"ground truth must hold integer labels, got {gt.dtype}")
    rows = torch.where(gt == ignore, num_classes, gt.to(dtype))
    low, high = _extremes(rows)
    if low < 0 or high > num_classes:
        value = low if low < 0 else high
        raise ValueError(
            f"ground-truth label {value} is outside 0..{num_classes - 1} and is not the "
            f"ignore label {ignore}"
        )
    return rows


def _extremes(labels: torch.Tensor) -> tuple[int, int]:
    if labels.numel() == 0:
        return 0, 0
    low, high = torch.aminmax(labels)
    return int(low), int(high)


def _check_confusion(confusion: torch.Tensor) -> torch.Tensor:
    if confusion.dim() < 2 or confusion.shape[-1] != confusion.shape[-2]:
        raise ValueError(f"a confusion matrix must be (..., N, N), got {tuple(confusion.shape)}")
    return confusion.double()


def true_positives(confusion: torch.Tensor) -> torch.Tensor:
    """``(..., N)`` diagonal of ``(..., N, N)`` matrices."""
    return confusion.diagonal(dim1=-2, dim2=-1)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """``(..., N)`` float64 IoU = TP / (TP + FP + FN) per class; NaN where the class is in
    neither the ground truth nor the prediction (zero union)."""
    c = _check_confusion(confusion)
    tp = true_positives(c)
    union = c.sum(-1) + c.sum(-2) - tp
    return tp / union  # 0/0 -> NaN marks an absent class


def mean_iou(confusion: torch.Tensor) -> torch.Tensor:
    """``(...)`` float64 mean IoU over the classes with a non-zero union (VOC protocol).

    NaN only where no class has a pixel (an empty matrix)."""
    return iou_per_class(confusion).nanmean(-1)


def precision_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """``(..., N)`` float64 TP / (TP + FP); NaN for a class never predicted."""
    c = _check_confusion(confusion)
    return true_positives(c) / c.sum(-2)


def recall_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """``(..., N)`` float64 TP / (TP + FN); NaN for a class absent from the ground truth."""
    c = _check_confusion(confusion)
    return true_positives(c) / c.sum(-1)


def pixel_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """``(...)`` float64 fraction of counted pixels predicted right."""
    c = _check_confusion(confusion)
    return true_positives(c).sum(-1) / c.sum((-2, -1))
