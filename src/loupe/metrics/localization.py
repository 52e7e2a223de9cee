"""CAM's ILSVRC localization protocol: boxes from maps, top-1 / top-5 localization error.

Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016, Section 3:

- **The box rule** (:func:`cam_box`): keep the pixels whose value is above 20% of the map's
  maximum and box the largest connected component.
- **Localization error** (:func:`localization_errors`), the ILSVRC rule (the devkit's
  ``eval_clsloc.m``, also in the authors' repository): an image gets up to five guesses
  ``(class, box)``, the classifier's best classes in order, each with the box of its own map.
  For each ground-truth class ``l`` of the image, ``miss_l(k) = 1`` unless one of the first
  ``k`` guesses names ``l`` *and* its box has IoU >= 0.5 with a ground-truth box of ``l``;
  the image's error is the mean of ``miss_l`` over its classes, the top-k error the mean over
  images. With one class per image (ILSVRC) this is: wrong unless a guess among the top k is
  right and well placed. The classification error is the same without the box condition.
- **The heuristic of several boxes** (:func:`heuristic_guesses`, the paper's ILSVRC test
  entry): "two bounding boxes (one tight and one loose) from the class activation map of the
  top 1st and 2nd predicted classes and one loose bounding box from the top 3rd predicted
  class", five guesses in all. The paper does not define tight and loose; the authors' code
  does (``generate_bbox.m``, ``bboxgenerator/dt_box.cpp``, ``ILSVRC_evaluate_bbox.m``), and
  :func:`cam_box_candidates` follows it: the map over its maximum is thresholded at 20, 100
  and 110 (of 255); each binary image is eroded relative to its own size (pixels whose
  distance to the background, scaled so that the largest is 255, rounds to 10 or less are
  dropped); the boxes of every component at the three thresholds are ranked by area, and a
  box that overlaps an earlier (larger) one by more than half of the larger one's area is
  dropped. The first box is the *loose* one, the second the *tight* one (the loose one again
  when no second box survives). The guesses are then ``c1 loose, c1 tight, c2 loose, c2
  tight, c3 loose`` (the authors' ``bboxCombine``).

Differences from the authors' C++/OpenCV generator, all at the pixel level: boxes are
inclusive pixel boxes of 8-connected components (OpenCV's ``findContours`` with
``RETR_CCOMP`` also boxes the holes, and ``dt_box`` trims 5 pixels at the right and bottom
image border); thresholds apply to the float map, not to an 8-bit JPEG of it; and the
de-duplication is the greedy rule it intends (its loop skips the box after each one it
removes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from loupe.metrics.boxes import EMPTY_BOX, box_iou, component_boxes

#: The authors' box generator thresholds, as fractions of the map's maximum (20, 100, 110 of
#: 255 in ``generate_bbox.m``).
GENERATOR_THRESHOLDS = (20 / 255, 100 / 255, 110 / 255)
#: ``dt_box``'s erosion: pixels whose distance transform, scaled to 0..255, exceeds this stay.
GENERATOR_EROSION = 10


def _over_max(scoremap: torch.Tensor) -> np.ndarray:
    """``(H, W)`` map -> float32 array of ``map / max(map)`` clipped at 0 (all 0 when the
    maximum is not positive): the heat map the authors' code writes."""
    if scoremap.dim() != 2:
        raise ValueError(f"a score map must be 2D (H, W), got {tuple(scoremap.shape)}")
    values = scoremap.detach().float().cpu()
    peak = float(values.max()) if values.numel() else 0.0
    if not peak > 0:
        return np.zeros(tuple(values.shape), dtype=np.float32)
    return (values / peak).clamp(min=0).numpy()


def cam_box(scoremap: torch.Tensor, threshold: float = 0.2, *, connectivity: int = 8
            ) -> torch.Tensor:
    """CAM's box: the largest connected component (most pixels; the first in raster order on
    ties) of the pixels above ``threshold`` times the map's maximum (Zhou et al. 2016: 20%;
    Selvaraju et al. 2017 use 15% for Grad-CAM).

    Args:
        scoremap: ``(H, W)`` map (any positive scale).

    Returns:
        ``(4,)`` int64 inclusive box ``(x0, y0, x1, y1)`` on the map's device;
        :data:`~loupe.metrics.boxes.EMPTY_BOX` when the maximum is not positive.
    """
    if not 0 <= threshold < 1:
        raise ValueError(f"the box threshold is a fraction of the map's maximum in [0, 1), got "
                         f"{threshold}")
    boxes, sizes = component_boxes(_over_max(scoremap) > np.float32(threshold), connectivity)
    box = boxes[int(np.argmax(sizes))] if len(sizes) else np.array(EMPTY_BOX)
    return torch.as_tensor(box, dtype=torch.long, device=scoremap.device)


def _eroded(binary: np.ndarray) -> np.ndarray:
    """``dt_box``'s ``fromDT``: keep the pixels whose Euclidean distance to the nearest
    background pixel, scaled so that the largest distance is 255 and rounded, exceeds
    :data:`GENERATOR_EROSION` (all kept when there is no background, none when no pixel)."""
    if binary.all() or not binary.any():
        return binary
    distance = ndimage.distance_transform_edt(binary)
    scaled = np.floor(distance * (255.0 / distance.max()) + 0.5)
    return scaled > GENERATOR_EROSION


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """dt_box's ``big_overlap``: intersection > half the larger box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0]) + 1
    height = min(a[3], b[3]) - max(a[1], b[1]) + 1
    area = max((a[2] - a[0] + 1) * (a[3] - a[1] + 1), (b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return max(width, 0) * max(height, 0) > area * 0.5


def cam_box_candidates(
    scoremap: torch.Tensor, thresholds: Sequence[float] = GENERATOR_THRESHOLDS
) -> torch.Tensor:
    """The authors' box generator (see the module docstring): ``(n, 4)`` int64 inclusive
    boxes, largest first, near-duplicates removed; ``(0, 4)`` when no pixel is above the
    lowest threshold."""
    heat = _over_max(scoremap)
    found = [component_boxes(_eroded(heat > np.float32(t)))[0] for t in thresholds]
    boxes = np.concatenate(found) if found else np.zeros((0, 4), dtype=np.int64)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    kept: list[np.ndarray] = []
    for index in np.argsort(-areas, kind="stable"):
        if not any(_overlaps(boxes[index], other) for other in kept):
            kept.append(boxes[index])
    result = np.stack(kept) if kept else np.zeros((0, 4), dtype=np.int64)
    return torch.as_tensor(result, dtype=torch.long, device=scoremap.device)


def loose_and_tight_boxes(scoremap: torch.Tensor) -> torch.Tensor:
    """``(2, 4)``: the loose box (the generator's first, largest) and the tight box (its
    second; the loose box again when there is none); empty boxes for a map without a
    positive value."""
    boxes = cam_box_candidates(scoremap)
    empty = torch.tensor(EMPTY_BOX, dtype=torch.long, device=scoremap.device)
    loose = boxes[0] if len(boxes) else empty
    tight = boxes[1] if len(boxes) > 1 else loose
    return torch.stack([loose, tight])


def heuristic_guesses(
    classes: torch.Tensor, maps: Sequence[torch.Tensor | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's five guesses from the maps of the three best classes: ``c1 loose, c1
    tight, c2 loose, c2 tight, c3 loose`` (fewer with fewer classes).

    Args:
        classes: ``(G,)`` the ranked guessed classes (only the first three are used).
        maps: ``G`` maps ``(H, W)`` of those classes (None: no map, empty boxes).

    Returns:
        ``(classes (n,), boxes (n, 4))`` with ``n <= 5``.
    """
    picked, boxes = [], []
    for rank, (label, scoremap) in enumerate(zip(classes.tolist()[:3], maps, strict=False)):
        if scoremap is None:
            pair = torch.tensor([EMPTY_BOX, EMPTY_BOX], dtype=torch.long)
        else:
            pair = loose_and_tight_boxes(scoremap).cpu()
        for box in pair[: 1 if rank == 2 else 2]:
            picked.append(label)
            boxes.append(box)
    if not boxes:
        return torch.zeros(0, dtype=torch.long), torch.zeros((0, 4), dtype=torch.long)
    return torch.tensor(picked, dtype=torch.long), torch.stack(boxes)


@dataclass(frozen=True)
class GuessRecord:
    """One (image, ground-truth class) pair against the image's ranked guesses.

    match: ``(G,)`` bool, guess ``g`` names the pair's class.
    iou: ``(G,)`` float64, the best IoU of guess ``g``'s box with a ground-truth box of the
        class (0 where ``match`` is False).
    heuristic: ``(H,)`` float64, the same for :func:`heuristic_guesses` (None without them).
    """

    match: torch.Tensor
    iou: torch.Tensor
    heuristic: torch.Tensor | None = None


def guess_ious(guess_classes: torch.Tensor, guess_boxes: torch.Tensor, label: int,
               gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(match (G,) bool, iou (G,) float64)`` of guesses ``(G,)`` with boxes ``(G, 4)``
    against the inclusive ground-truth boxes ``(M, 4)`` of class ``label``: the best IoU of
    each guess's box, 0 where the guess names another class."""
    match = guess_classes.cpu() == label
    if not len(guess_classes) or not len(gt_boxes):
        return match, torch.zeros(len(guess_classes), dtype=torch.float64)
    best = box_iou(guess_boxes.cpu(), gt_boxes.cpu()).amax(1)
    return match, torch.where(match, best, 0.0)


def image_errors(records: Sequence[GuessRecord], k: int, iou: float = 0.5, *,
                 boxes: bool = True, heuristic: bool = False) -> float:
    """One image's error with its first ``k`` guesses: the mean over its ground-truth classes
    (``records``) of "no guess among the first k names the class with IoU >= ``iou``"
    (``boxes=False``: names the class, the classification error; ``heuristic``: the
    heuristic's guesses)."""
    misses = []
    for record in records:
        if heuristic:
            hits = record.heuristic[:k] >= iou if record.heuristic is not None else None
            if hits is None:
                raise ValueError("no heuristic guesses recorded for this pair")
        else:
            hits = record.iou[:k] >= iou if boxes else record.match[:k]
        misses.append(0.0 if bool(hits.any()) else 1.0)
    return sum(misses) / len(misses)


def localization_errors(
    images: Sequence[Sequence[GuessRecord]], *, max_k: int = 5, iou: float = 0.5,
    heuristic: bool = False,
) -> dict[str, object]:
    """Top-1 and top-5 localization and classification errors (fractions in [0, 1]) over
    ``images`` (each the :class:`GuessRecord` of its ground-truth classes; images without any
    are left out), by the ILSVRC rule of the module docstring.

    Args:
        max_k: how many guesses an image may have (the maps' ``--topk``; 1 for maps of the
            image-level labels, whose only guess is the top-1 class): top-5 figures need 5.
        iou: the IoU a box needs, in (0, 1] (ILSVRC: 0.5).
        heuristic: also the top-5 error of the paper's heuristic guesses (needs ``max_k >= 3``).

    Returns:
        ``images``, ``pairs``, ``iou`` and ``top{1,5}_loc_error``, ``top{1,5}_cls_error``
        (None where ``max_k`` is too small), ``top5_loc_error_heuristic`` (None without).
    """
    if not 0 < iou <= 1:
        raise ValueError(f"the IoU threshold must lie in (0, 1], got {iou}")
    counted = [records for records in images if len(records)]
    if not counted:
        raise ValueError("no image with a ground-truth class with boxes to localize")
    result: dict[str, object] = {"images": len(counted),
                                 "pairs": sum(len(r) for r in counted), "iou": iou}

    def mean_error(k: int, **how: bool) -> float:
        return sum(image_errors(r, k, iou, **how) for r in counted) / len(counted)

    for k in (1, 5):
        enough = k <= max_k
        result[f"top{k}_loc_error"] = mean_error(k) if enough else None
        result[f"top{k}_cls_error"] = mean_error(k, boxes=False) if enough else None
    use_heuristic = heuristic and max_k >= 3
    result["top5_loc_error_heuristic"] = mean_error(5, heuristic=True) if use_heuristic else None
    return result
