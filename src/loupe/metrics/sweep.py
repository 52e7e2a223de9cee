"""mIoU of pseudo-masks at many background thresholds at once, and its summary.

The threshold of IRN's rule (:func:`loupe.masks.threshold.masks_from_maps`) decides much of a
method's mIoU; AMN (Lee et al., "Threshold Matters in WSSS", CVPR 2022) shows that reporting
one hand-picked threshold hides how sensitive a method is. :func:`sweep_confusions` gives the
confusion matrices for every threshold in one pass, :func:`sweep_summary` the best mIoU, the
mIoU at fixed thresholds and the spread over a range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from loupe.masks.threshold import best_class_scores
from loupe.metrics.segmentation import ground_truth_rows, mean_iou


def default_thresholds() -> torch.Tensor:
    """The 20 thresholds 0.00, 0.05, ..., 0.95 (float32)."""
    return torch.arange(20, dtype=torch.float64).div(20).float()


def sweep_confusions(
    maps: torch.Tensor,
    classes: torch.Tensor,
    gt: torch.Tensor,
    thresholds: Sequence[float] | torch.Tensor | None = None,
    num_classes: int = 21,
    *,
    ignore: int = 255,
    per_image: bool = False,
) -> torch.Tensor:
    """Confusion matrices of IRN-rule masks at every threshold, in one pass.

    Equal, threshold by threshold, to ``confusion_matrix(masks_from_maps(maps, classes, t),
    gt)``: the maps are normalised and reduced to (best score, its label) once; a pixel is
    foreground at threshold ``t`` iff its best score is ``> t``, so with ``k`` = the number of
    thresholds below its score it is foreground at ``t_0..t_{k-1}`` and background after.
    One ``torch.bincount`` over ``(image, k, gt, label)`` and a suffix sum over ``k`` give all
    T matrices, in O(pixels) instead of O(T * pixels).

    Args:
        maps: ``(K, H, W)`` or ``(B, K, H, W)`` raw maps.
        classes: ``(K,)`` or ``(B, K)`` labels of the maps in ``[1, num_classes)``, -1 = padding.
        gt: ``(H, W)`` or ``(B, H, W)`` ground truth, ``ignore`` left out.
        thresholds: ``(T,)`` strictly increasing; default :func:`default_thresholds`.
        num_classes: N, background included.
        per_image: return ``(B, T, N, N)`` (one stack per image) instead of the sum.

    Returns:
        ``(T, N, N)`` int64 (summed over images), or ``(B, T, N, N)`` with ``per_image``.
    """
    if maps.dim() == 3:
        maps, classes, gt = maps[None], classes[None], gt[None]
    _check_inputs(maps, classes, gt, num_classes)
    device = maps.device
    scores, labels = best_class_scores(maps, classes, label_dtype=torch.int32)
    bounds = _check_thresholds(thresholds, scores.dtype, device)
    t = bounds.numel()
    images = maps.shape[0] if per_image else 1
    n2 = (num_classes + 1) * num_classes  # row N collects the ignored pixels
    cells = (t + 1) * n2
    wide = images * cells >= 2**31
    index = ground_truth_rows(gt.to(device), num_classes, ignore, dtype=torch.int32)
    index = index.long() if wide else index
    index *= num_classes
    index += labels
    index.add_(count_below(scores, bounds), alpha=n2)
    if per_image:
        index += torch.arange(images, device=device, dtype=index.dtype).view(-1, 1, 1) * cells
    counts = torch.bincount(index.flatten(), minlength=images * cells)
    counts = counts.view(images, t + 1, num_classes + 1, num_classes)[:, :, :num_classes]
    # Foreground at threshold j: pixels with k > j keep their label (suffix sum over k);
    # background: pixels with k <= j, whatever their label (prefix sum, into column 0).
    confusions = counts.flip(1).cumsum(1).flip(1)[:, 1:].contiguous()
    confusions[..., 0] += counts.sum(-1).cumsum(1)[:, :t]
    return confusions if per_image else confusions[0]


def _check_inputs(maps: torch.Tensor, classes: torch.Tensor, gt: torch.Tensor,
                  num_classes: int) -> None:
    """A ValueError unless ``maps`` ``(B, K, H, W)``, ``classes`` ``(B, K)`` in
    ``1..num_classes-1`` (-1 = padding) and integer ``gt`` ``(B, H, W)`` agree."""
    if maps.dim() != 4 or gt.dim() != 3:
        raise ValueError(
            f"maps must be (K, H, W) or (B, K, H, W) with gt (H, W) or (B, H, W), got "
            f"maps {tuple(maps.shape)} and gt {tuple(gt.shape)}"
        )
    if gt.shape[0] != maps.shape[0] or gt.shape[-2:] != maps.shape[-2:]:
        raise ValueError(
            f"gt {tuple(gt.shape)} does not match maps {tuple(maps.shape)}: give one "
            "ground-truth mask per image at the maps' size"
        )
    if gt.is_floating_point():
        raise ValueError(f"gt must hold integer labels, got {gt.dtype}")
    real = classes[classes >= 0]
    if real.numel() and (int(real.min()) < 1 or int(real.max()) >= num_classes):
        raise ValueError(
            f"map classes must lie in 1..{num_classes - 1} (0 is background), got "
            f"{int(real.min())}..{int(real.max())}"
        )


def count_below(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """For each score, how many of the increasing ``thresholds`` are strictly below it: the
    result of ``torch.bucketize(scores, thresholds)``, compared in the scores' dtype exactly
    as ``score > t`` in :func:`loupe.masks.threshold.masks_from_maps`. Scores must not be NaN.

    ``bucketize``'s binary search is slow on CPU, so for thresholds in [0, 1] with at most
    one per 1/4096-wide bin (any sensible sweep) a lookup replaces it: ``b = floor(4096 s)``
    is exact (a power-of-two scale), ``table[b]`` counts the thresholds below ``b / 4096``,
    and one comparison with the threshold inside bin ``b`` (if any) finishes the count.
    Several times faster than ``bucketize`` on CPU. Returns int64 counts.
    """
    lookup = _bin_lookup(thresholds)
    if lookup is None:
        return torch.bucketize(scores, thresholds)
    below, inside = lookup
    bins = (scores * _BINS).clamp_(0, _BINS).long()
    count = below.take(bins)
    count += scores > inside.take(bins)
    return count


_BINS = 4096


def _bin_lookup(thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(thresholds below each bin's left edge, the threshold inside each bin or +inf), or
    None when the thresholds leave [0, 1] or two share a bin."""
    if thresholds.numel() == 0 or thresholds[0] < 0 or thresholds[-1] > 1:
        return None
    bins = (thresholds * _BINS).long()
    if bins.numel() > 1 and not bool((bins[1:] > bins[:-1]).all()):
        return None
    edges = torch.arange(_BINS + 1, device=thresholds.device, dtype=thresholds.dtype) / _BINS
    below = torch.bucketize(edges, thresholds)
    inside = torch.full_like(edges, torch.inf).index_put_((bins,), thresholds)
    return below, inside


def _check_thresholds(
    thresholds: Sequence[float] | torch.Tensor | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    if thresholds is None:
        return default_thresholds().to(device=device, dtype=dtype)
    bounds = torch.as_tensor(thresholds, dtype=dtype).to(device).flatten()
    if bounds.numel() == 0:
        raise ValueError("thresholds must not be empty")
    if bounds.numel() > 1 and not bool((bounds[1:] > bounds[:-1]).all()):
        raise ValueError(f"thresholds must be strictly increasing, got {bounds.tolist()}")
    return bounds


@dataclass(frozen=True)
class SweepSummary:
    """mIoU against the background threshold, summarised.

    thresholds, miou: the curve (mIoU as fractions in [0, 1]).
    best_miou, best_threshold: its maximum (the first threshold reaching it).
    fixed: threshold -> mIoU at the fixed thresholds.
    spread_range: the inclusive threshold range the spread is measured over.
    spread: max - min of mIoU over that range; spread_std: its population std (AMN's
    sensitivity to the threshold: lower is more robust).
    """

    thresholds: tuple[float, ...]
    miou: tuple[float, ...]
    best_miou: float
    best_threshold: float
    fixed: dict[float, float]
    spread_range: tuple[float, float]
    spread: float
    spread_std: float

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (fixed thresholds as string keys)."""
        data = asdict(self)
        data["fixed"] = {f"{k:g}": v for k, v in self.fixed.items()}
        return data


def sweep_summary(
    confusions: torch.Tensor,
    thresholds: Sequence[float] | torch.Tensor | None = None,
    fixed: Sequence[float] = (0.1, 0.15, 0.2, 0.3),
    spread_range: tuple[float, float] = (0.1, 0.6),
    *,
    atol: float = 1e-6,
) -> SweepSummary:
    """Summarise ``(T, N, N)`` confusions from :func:`sweep_confusions`.

    ``fixed`` must be among ``thresholds`` (to ``atol``); the spread is over the thresholds
    in ``[lo, hi]`` of ``spread_range``. The defaults are loupe's choice: 0.15 is IRN's
    evaluation threshold, and 0.1..0.6 covers the thresholds WSSS papers commonly use.
    """
    if confusions.dim() != 3:
        raise ValueError(f"confusions must be (T, N, N), got {tuple(confusions.shape)}")
    values = (
        default_thresholds().double()
        if thresholds is None
        else torch.as_tensor(thresholds, dtype=torch.float64).flatten()
    )
    if values.numel() != confusions.shape[0]:
        raise ValueError(
            f"{values.numel()} thresholds for {confusions.shape[0]} confusion matrices"
        )
    miou = mean_iou(confusions.cpu())
    if bool(miou.isnan().any()):
        raise ValueError("a confusion matrix has no counted pixel; nothing to summarise")
    rounded = [round(float(v), 6) for v in values]
    curve = [float(m) for m in miou]
    best = int(miou.argmax())
    at_fixed = {}
    for f in fixed:
        hits = (values - f).abs() <= atol
        if not bool(hits.any()):
            raise ValueError(f"fixed threshold {f} is not among the swept thresholds {rounded}")
        at_fixed[float(f)] = curve[int(hits.nonzero()[0])]
    lo, hi = spread_range
    inside = (values >= lo - atol) & (values <= hi + atol)
    if not bool(inside.any()):
        raise ValueError(f"no swept threshold lies in spread_range {spread_range}")
    part = miou[inside]
    return SweepSummary(
        thresholds=tuple(rounded),
        miou=tuple(curve),
        best_miou=curve[best],
        best_threshold=rounded[best],
        fixed=at_fixed,
        spread_range=(float(lo), float(hi)),
        spread=float(part.max() - part.min()),
        spread_std=float(part.std(correction=0)),
    )
