"""Class maps to pseudo-masks with a constant background score (IRN's rule).

Conventions: ``maps`` are ``(..., K, H, W)`` float, one map per entry of ``classes``
``(..., K)`` int, the label each map paints in the mask's label space (VOC: 1..20; 0 is
background, 255 ignore). A class of -1 marks padding: its map never wins a pixel.
"""

from __future__ import annotations

import torch

BACKGROUND = 0
IGNORE = 255


def normalize_by_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-map max normalisation of ``(..., H, W)`` maps: ``ReLU(m) / max(ReLU(m))``.

    Negative scores (and NaN) become 0 and each map is divided by its own maximum, so the
    strongest pixel of every map scores 1 (IRN, Ahn et al. CVPR 2019, ``make_cam``). A map
    with no positive value becomes all zeros; NaN counts as 0 and infinities as the largest
    finite values. Computed in float32 (float64 stays float64).
    """
    maps = maps if maps.dtype == torch.float64 else maps.float()
    positive = maps.nan_to_num(0.0).clamp_(min=0)  # NaN -> 0, +-inf -> finite extremes
    peak = positive.amax(dim=(-2, -1), keepdim=True)
    # a map with peak 0 is all zeros, and 0 / tiny = 0: no branch needed
    return positive.div_(peak.clamp_(min=torch.finfo(maps.dtype).tiny))


def best_class_scores(
    maps: torch.Tensor, classes: torch.Tensor, *, label_dtype: torch.dtype = torch.long
) -> tuple[torch.Tensor, torch.Tensor]:
    """The winning normalised score and its label at each pixel.

    Args:
        maps: ``(..., K, H, W)`` raw maps.
        classes: ``(..., K)`` int labels, -1 for padding.

    Returns:
        ``scores`` ``(..., H, W)`` float: the largest max-normalised score over the K maps
        (``-inf`` where every map is padding or K = 0; NaN scores never win);
        ``labels`` ``(..., H, W)`` in ``label_dtype``: the label of that map (the first of
        equal maps, as ``argmax`` does), 0 where no map wins.
    """
    _check_maps_classes(maps, classes)
    classes = classes.to(device=maps.device, dtype=label_dtype)
    scores = normalize_by_max(maps)
    shape = scores.shape[:-3] + scores.shape[-2:]
    count = scores.shape[-3]
    if count == 0:
        best = torch.full(shape, -torch.inf, dtype=scores.dtype, device=scores.device)
        return best, torch.zeros(shape, dtype=label_dtype, device=scores.device)
    padding = classes < 0
    padded = bool(padding.any())  # classes is tiny: checking it costs nothing
    if padded:
        scores = scores.masked_fill(padding[..., None, None], -torch.inf)
    # K is small: a running maximum over the maps is much faster than argmax over a
    # strided dim, and ">" keeps the first of equal maps, as argmax does.
    best = scores[..., 0, :, :]
    labels = classes[..., 0, None, None].expand(shape).clone()
    for k in range(1, count):
        score = scores[..., k, :, :]
        better = score > best
        best = torch.maximum(best, score)
        labels = torch.where(better, classes[..., k, None, None], labels)
    if padded:
        labels.masked_fill_(best == -torch.inf, 0)
    return best, labels


def masks_from_maps(
    maps: torch.Tensor, classes: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Pseudo-masks by IRN's background-threshold rule (Ahn et al., CVPR 2019).

    Each map is max-normalised (:func:`normalize_by_max`); a constant background score
    ``threshold`` is put in front of the K scores, and each pixel takes the label of the
    argmax: ``label = [0, classes][argmax(threshold, s_1, ..., s_K)]``. Background wins
    ties (a pixel is foreground only where its best score is strictly above ``threshold``).

    Args:
        maps: ``(..., K, H, W)`` raw maps (any device).
        classes: ``(..., K)`` int labels of the maps, -1 for padding.
        threshold: the background score, usually in [0, 1].

    Returns:
        ``(..., H, W)`` long masks on ``maps``' device.
    """
    scores, labels = best_class_scores(maps, classes)
    background = torch.tensor(threshold, dtype=scores.dtype, device=scores.device)
    return torch.where(scores > background, labels, BACKGROUND)


def confident_masks(
    maps: torch.Tensor, classes: torch.Tensor, fg: float, bg: float
) -> torch.Tensor:
    """Masks that keep only confident pixels (IRN's ``conf_fg_thres`` / ``conf_bg_thres``).

    With ``s`` the best max-normalised score of a pixel: its label where ``s >= fg``,
    background where ``s < bg``, and 255 (ignore) in between.

    Args:
        maps: ``(..., K, H, W)`` raw maps.
        classes: ``(..., K)`` int labels, -1 for padding.
        fg: foreground threshold; bg: background threshold, ``bg <= fg``.

    Returns:
        ``(..., H, W)`` long masks with values in ``classes``, 0 and 255.
    """
    if bg > fg:
        raise ValueError(f"bg ({bg}) must not exceed fg ({fg})")
    scores, labels = best_class_scores(maps, classes)
    masks = torch.full_like(labels, IGNORE)
    masks = torch.where(scores >= fg, labels, masks)
    return torch.where(scores < bg, BACKGROUND, masks)


def _check_maps_classes(maps: torch.Tensor, classes: torch.Tensor) -> None:
    if not isinstance(maps, torch.Tensor) or maps.dim() < 3 or not maps.is_floating_point():
        what = f"shape {tuple(maps.shape)}, {maps.dtype}" if isinstance(maps, torch.Tensor) else (
            type(maps).__name__
        )
        raise ValueError(f"maps must be a float tensor (..., K, H, W), got {what}")
    if not isinstance(classes, torch.Tensor) or classes.is_floating_point():
        raise ValueError("classes must be an int tensor (..., K) of labels, one per map")
    if tuple(classes.shape) != tuple(maps.shape[:-2]):
        raise ValueError(
            f"classes has shape {tuple(classes.shape)} but maps {tuple(maps.shape)} need "
            f"{tuple(maps.shape[:-2])} (one label per map)"
        )
