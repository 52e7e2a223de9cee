"""The PASCAL VOC colour palette and paletted mask PNGs (the format of VOC ground truth)."""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import torch
from PIL import Image

from loupe.io import open_image, save_image


@cache
def voc_palette() -> tuple[int, ...]:
    """The 256-entry VOC palette as 768 ints ``(r0, g0, b0, r1, ...)``.

    Colour ``i`` spreads the bits of ``i`` over the channels, most significant first
    (VOCdevkit's ``labelcolormap``): 0 black, 1 (128, 0, 0), ..., 255 (224, 224, 192).
    """
    palette = []
    for index in range(256):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette += [r, g, b]
    return tuple(palette)


def colorize_mask(mask: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` integer labels in [0, 255] -> ``(..., H, W, 3)`` uint8 VOC colours,
    on the mask's device."""
    _check_mask_values(mask, "mask")
    table = torch.tensor(voc_palette(), dtype=torch.uint8, device=mask.device).view(256, 3)
    return table[mask.long()]


def save_mask_png(path: str | os.PathLike[str], mask: torch.Tensor) -> None:
    """Write a ``(H, W)`` integer mask (values 0..255) as a paletted PNG with the VOC
    palette, atomically. Pixel values are the labels; viewers show VOC colours."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{path}: a mask must be a 2D tensor (H, W), got {shape}")
    _check_mask_values(mask, str(path))
    array = np.ascontiguousarray(mask.to(device="cpu", dtype=torch.uint8).numpy())
    image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
    image.putpalette(list(voc_palette()))
    save_image(path, image)


def load_mask_png(path: str | os.PathLike[str]) -> torch.Tensor:
    """A ``(H, W)`` long mask from a paletted (``P``) or grayscale (``L``) PNG: the stored
    indices, not colours. A ValueError names the file when it is not an index image."""
    try:
        with open_image(path) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(
                    f"{path}: a mask must be a paletted or grayscale image of class indices, "
                    f"got mode {image.mode!r} (colour-coded masks are not supported)"
                )
            array = np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot read mask ({error})") from error
    return torch.from_numpy(array).long()


def _check_mask_values(mask: torch.Tensor, name: str) -> None:
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(f"{name}: mask must hold integer labels, got {mask.dtype}")
    if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) > 255):
        raise ValueError(
            f"{name}: mask labels must lie in 0..255, got {int(mask.min())}..{int(mask.max())}"
        )
