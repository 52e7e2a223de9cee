"""Pseudo-masks from class maps: min-max normalisation, background threshold, confident masks,
CRF, VOC palette."""

from loupe.masks.crf import crf_refine_mask
from loupe.masks.normalize import normalize
from loupe.masks.palette import colorize_mask, load_mask_png, save_mask_png, voc_palette
from loupe.masks.threshold import (
    BACKGROUND,
    IGNORE,
    best_class_scores,
    confident_masks,
    masks_from_maps,
    normalize_by_max,
)

__all__ = [
    "BACKGROUND",
    "IGNORE",
    "best_class_scores",
    "colorize_mask",
    "crf_refine_mask",
    "confident_masks",
    "load_mask_png",
    "masks_from_maps",
    "normalize",
    "normalize_by_max",
    "save_mask_png",
    "voc_palette",
]
