"""Boxes from class maps, and box IoU.

Boxes are ``(x0, y0, x1, y1)`` int64 pixel indices with both ends inclusive (a box around a
single pixel has x0 == x1), the convention of wsolevaluation's ``calculate_multiple_iou``
(area ``(x1 - x0 + 1) * (y1 - y0 + 1)``). An empty box is ``(0, 0, -1, -1)``: area 0, IoU 0
with everything. Maps are min-max normalised to [0, 1] first (as CAM's and wsolevaluation's
code do), and a pixel is "on" where its normalised score is strictly above the threshold
(OpenCV's ``THRESH_BINARY`` rule). Connected components come from ``scipy.ndimage.label``
(8-connected by default, like OpenCV's contours), so maps go through numpy here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from loupe.masks.normalize import normalize

EMPTY_BOX = (0, 0, -1, -1)


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """``(A, B)`` float64 IoU between ``(A, 4)`` and ``(B, 4)`` inclusive pixel boxes
    (``(4,)`` is taken as one box); 0 where the union is empty."""
    a = _as_boxes(boxes_a, "boxes_a").double()
    b = _as_boxes(boxes_b, "boxes_b").to(a.device).double()
    x0 = torch.maximum(a[:, None, 0], b[None, :, 0])
    y0 = torch.maximum(a[:, None, 1], b[None, :, 1])
    x1 = torch.minimum(a[:, None, 2], b[None, :, 2])
    y1 = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x1 - x0 + 1).clamp(min=0) * (y1 - y0 + 1).clamp(min=0)
    area_a = (a[:, 2] - a[:, 0] + 1).clamp(min=0) * (a[:, 3] - a[:, 1] + 1).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0] + 1).clamp(min=0) * (b[:, 3] - b[:, 1] + 1).clamp(min=0)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), 0.0)


def box_from_map(
    scoremap: torch.Tensor, threshold: float = 0.2, *, connectivity: int = 8
) -> torch.Tensor:
    """CAM's box (Zhou et al., "Learning Deep Features for Discriminative Localization",
    CVPR 2016): keep the pixels above ``threshold`` (20%) of the map's range, and box the
    largest connected component (most pixels; the first in raster order on ties).

    Args:
        scoremap: ``(H, W)`` map.

    Returns:
        ``(4,)`` int64 inclusive box on the map's device; :data:`EMPTY_BOX` when no pixel is
        above the threshold (e.g. a constant map).
    """
    binary = _binary(scoremap, threshold)
    boxes, sizes = component_boxes(binary, connectivity)
    box = boxes[int(np.argmax(sizes))] if len(sizes) else np.array(EMPTY_BOX)
    return torch.as_tensor(box, dtype=torch.long, device=scoremap.device)


def boxes_from_map(
    scoremap: torch.Tensor,
    thresholds: Sequence[float] | torch.Tensor,
    *,
    multi_contour: bool = True,
    connectivity: int = 8,
    normalized: bool = False,
) -> list[torch.Tensor]:
    """Boxes at each threshold, wsolevaluation's ``compute_bboxes_from_scoremaps`` rule
    (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR
    2020): with ``multi_contour`` one box per connected component above the threshold (the
    best-matching one counts when scoring), otherwise the largest component's box only.

    Args:
        scoremap: ``(H, W)`` map; min-max normalised here unless ``normalized``.
        thresholds: ``(T,)`` thresholds on the normalised map.

    Returns:
        T tensors ``(n_t, 4)`` int64 (``n_t`` may be 0) on the map's device.
    """
    prepared = scoremap if normalized else normalize(scoremap.float())
    values = prepared.detach().to("cpu", torch.float32).numpy()
    result = []
    for threshold in torch.as_tensor(thresholds, dtype=torch.float32).flatten().tolist():
        boxes, sizes = component_boxes(values > np.float32(threshold), connectivity)
        if not multi_contour and len(sizes):
            boxes = boxes[int(np.argmax(sizes))][None]
        result.append(torch.as_tensor(boxes, dtype=torch.long, device=scoremap.device))
    return result


def inclusive_boxes(edge_boxes: torch.Tensor) -> torch.Tensor:
    """Data-set boxes in edge coordinates (``x1`` one past the last pixel, see
    :mod:`loupe.data.base`) -> the inclusive int64 pixel boxes of :mod:`loupe.metrics.boxes`."""
    boxes = edge_boxes.reshape(-1, 4).double()
    start = boxes[:, :2].floor()
    end = boxes[:, 2:].ceil() - 1
    return torch.cat([start, torch.maximum(end, start)], dim=1).long()


def _binary(scoremap: torch.Tensor, threshold: float) -> np.ndarray:
    if scoremap.dim() != 2:
        raise ValueError(f"a score map must be 2D (H, W), got {tuple(scoremap.shape)}")
    values = normalize(scoremap.detach().float()).cpu().numpy()
    return values > np.float32(threshold)


def component_boxes(binary: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 4)`` inclusive boxes and ``(n,)`` pixel counts of the connected components of a
    ``(H, W)`` boolean array, in raster order of their first pixel."""
    if binary.ndim != 2:
        raise ValueError(f"a score map must be 2D (H, W), got shape {binary.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    labels, count = ndimage.label(binary, structure=structure)
    if count == 0:
        return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
    slices = ndimage.find_objects(labels)
    boxes = np.array(
        [[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for s in slices], dtype=np.int64
    )
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return boxes, sizes


def _as_boxes(boxes: torch.Tensor, name: str) -> torch.Tensor:
    boxes = torch.as_tensor(boxes)
    if boxes.dim() == 1:
        boxes = boxes[None]
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must be (N, 4) boxes (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    return boxes
