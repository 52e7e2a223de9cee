"""Training and evaluation transforms: the standard WSSS augmentation, seeded per sample.

Every random draw comes from a ``torch.Generator`` seeded by ``(seed, epoch, index)``, so an
epoch's augmented samples are the same whatever the number of DataLoader workers, and a resumed
run sees the same data as an uninterrupted one. Images are tensors ``(3, H, W)`` in [0, 1]
until :class:`~loupe.models.Preprocessing` normalises them; masks are ``(H, W)`` long with
255 = ignore.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from loupe.data.base import IGNORE_INDEX, rgb_tensor
from loupe.methods._tiles import draw_rounds, shuffle_images
from loupe.models.preprocessing import Preprocessing


@dataclass(frozen=True)
class Augmentation:
    """The training augmentation; defaults are IRN's classifier recipe plus colour jitter.

    resize_long: (min, max) of the image's long side after a random rescale (IRN: 320..640);
        None keeps the size.
    flip: horizontal flip with probability 1/2.
    jitter: brightness, contrast, saturation, hue strengths (torchvision ``ColorJitter``
        meaning: factors drawn from ``[1 - s, 1 + s]``, hue shift from ``[-h, h]``); zeros: off.
    crop: side of the random square crop; smaller images are padded (image with 0 after
        normalisation, i.e. the mean colour; mask with 255). None: no crop.
    shuffle: probability of tile-shuffling the augmented image (and its mask alike) as shuffle
        saliency does (:func:`tile_shuffle`), so that a classifier sees shuffled images in
        training. 0: off (and no random draw is made, so the other draws are unchanged).
    """

    resize_long: tuple[int, int] | None = (320, 640)
    flip: bool = True
    jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    crop: int | None = 512
    shuffle: float = 0.0


def image_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """A PIL image or a uint8/float tensor as ``(3, H, W)`` float32 in [0, 1]."""
    if isinstance(image, Image.Image):
        image = rgb_tensor(image)
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"expected a PIL image or a (3, H, W) tensor, got {type(image).__name__}")
    if image.dtype == torch.uint8:
        return image.float() / 255
    return image.float()


def _draw(g: torch.Generator, low: float, high: float) -> float:
    return float(torch.rand((), generator=g) * (high - low) + low)


def random_resize(
    image: torch.Tensor, mask: torch.Tensor | None, long_side: tuple[int, int],
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rescale so that the long side is an integer drawn from ``long_side``; the image
    bilinearly (antialiased), the mask by nearest neighbour."""
    h, w = image.shape[-2:]
    target = int(torch.randint(long_side[0], long_side[1] + 1, (), generator=g))
    scale = target / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                          antialias=True)[0]
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, mask


def color_jitter(
    image: torch.Tensor, strengths: tuple[float, float, float, float], g: torch.Generator
) -> torch.Tensor:
    """Brightness, contrast, saturation, hue of a ``(3, H, W)`` [0, 1] image, in that order,
    with factors drawn from ``g``."""
    b, c, s, h = strengths
    if b > 0:
        image = TF.adjust_brightness(image, _draw(g, max(0.0, 1 - b), 1 + b))
    if c > 0:
        image = TF.adjust_contrast(image, _draw(g, max(0.0, 1 - c), 1 + c))
    if s > 0:
        image = TF.adjust_saturation(image, _draw(g, max(0.0, 1 - s), 1 + s))
    if h > 0:
        image = TF.adjust_hue(image, _draw(g, -h, h))
    return image.clamp(0, 1)


def random_crop(
    image: torch.Tensor, mask: torch.Tensor | None, size: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random ``size x size`` window; the image is zero-padded (mask: 255) where smaller.
    As in IRN, the image is placed at a random offset inside the window when it is smaller."""
    h, w = image.shape[-2:]
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    top_pad = int(torch.randint(0, pad_h + 1, (), generator=g))
    left_pad = int(torch.randint(0, pad_w + 1, (), generator=g))
    padding = (left_pad, pad_w - left_pad, top_pad, pad_h - top_pad)
    image = F.pad(image, padding, value=0.0)
    if mask is not None:
        mask = F.pad(mask, padding, value=IGNORE_INDEX)
    h, w = image.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (), generator=g))
    left = int(torch.randint(0, w - size + 1, (), generator=g))
    image = image[:, top : top + size, left : left + size]
    if mask is not None:
        mask = mask[top : top + size, left : left + size]
    return image, mask


#: The grids of the training shuffle: those of shuffle saliency's default.
SHUFFLE_GRIDS = (2, 3, 4)


def tile_shuffle(
    image: torch.Tensor, mask: torch.Tensor | None, g: torch.Generator,
    grids: tuple[int, ...] = SHUFFLE_GRIDS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One shuffle round of shuffle saliency (:func:`loupe.methods._tiles.draw_rounds`: a grid
    from ``grids``, a tile permutation and a cyclic offset, drawn from ``g``) applied to a
    ``(C, H, W)`` image and, with the same permutation of the pixels, its ``(H, W)`` mask."""
    height, width = image.shape[-2:]
    usable = tuple(grid for grid in grids if grid <= min(height, width)) or (1,)
    (round_,) = draw_rounds(height, width, 1, usable, jitter=True, offset="cyclic",
                            generator=g, device=image.device)
    image = shuffle_images(image, round_)
    return image, None if mask is None else shuffle_images(mask, round_)


def augment(
    image: torch.Tensor, mask: torch.Tensor | None, augmentation: Augmentation,
    preprocessing: Preprocessing, g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rescale, flip, jitter, normalise, crop a ``(3, H, W)`` [0, 1] image and its mask; then,
    with probability ``augmentation.shuffle``, tile-shuffle both (:func:`tile_shuffle`)."""
    if augmentation.resize_long is not None:
        image, mask = random_resize(image, mask, augmentation.resize_long, g)
    if augmentation.flip and bool(torch.rand((), generator=g) < 0.5):
        image = image.flip(-1)
        mask = None if mask is None else mask.flip(-1)
    if any(s > 0 for s in augmentation.jitter):
        image = color_jitter(image, augmentation.jitter, g)
    image = preprocessing(image)
    if augmentation.crop is not None:
        image, mask = random_crop(image, mask, augmentation.crop, g)
    if augmentation.shuffle > 0 and bool(torch.rand((), generator=g) < augmentation.shuffle):
        image, mask = tile_shuffle(image, mask, g)
    return image, mask


def resize_and_pad(image: torch.Tensor, size: int) -> torch.Tensor:
    """Evaluation input: the long side resized to ``size``, then zero-padded (bottom/right)
    to ``size x size``. Takes and returns ``(3, H, W)``; apply after normalisation."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    if shape != (h, w):
        image = F.interpolate(image[None], size=shape, mode="bilinear", align_corners=False,
                              antialias=True)[0]
    return F.pad(image, (0, size - shape[1], 0, size - shape[0]), value=0.0)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A generator seed for one sample of one epoch (distinct for every triple in range)."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


class Transformed(Dataset):
    """``base[index]`` passed through ``function(sample, generator) -> item`` with a generator
    seeded by :func:`sample_seed`; call :meth:`set_epoch` before each epoch's iteration."""

    def __init__(self, base: Dataset, function: Callable[[Any, torch.Generator], Any],
                 seed: int = 0) -> None:
        self.base = base
        self.function = function
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        return self.function(self.base[index], g)
