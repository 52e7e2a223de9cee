"""What every data set yields: :class:`Sample`, the lazy base class and the shared readers.

A data set is a map-style :class:`torch.utils.data.Dataset`. Its index files (split lists,
annotation JSON, metadata) are read when it is opened; images, masks and label files are read
only when an item is requested. Conventions shared by all data sets:

- ``labels``: ``(num_classes,)`` float32 multi-hot image-level labels in the data set's class
  index space. For segmentation sets index 0 is the background, which is never an image-level
  label (``labels[0] == 0``), so ``labels[c] == 1`` iff class ``c`` may appear in the mask.
- ``mask``: ``(H, W)`` long class indices at the image's size, ``255`` = ignore.
- ``boxes``: ``(M, 4)`` float32 ``x0, y0, x1, y1`` in pixels (edge coordinates: a box covering
  pixel columns 0..9 is ``x0=0, x1=10``), ``box_labels``: ``(M,)`` long class indices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from loupe.io import load_rgb, oriented_size, rgb_image

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
"""Mask value for pixels that are not evaluated (object borders in VOC, crowd regions in COCO)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_INDEX_MASK_MODES = ("P", "L", "I", "I;16")

PathLike = str | os.PathLike[str]
Transform = Callable[[Image.Image], Any]


@dataclass
class Sample:
    """One item of a data set.

    id: the image id (file stem, or the path in the WSOL metadata).
    image: PIL RGB image, the output of the data set's ``transform``, or None in masks-only
        mode (``images=False``).
    labels: ``(num_classes,)`` float32 multi-hot image-level labels.
    mask: ``(H, W)`` long class indices (255 = ignore) or None.
    boxes: ``(M, 4)`` float32 xyxy pixel boxes or None.
    box_labels: ``(M,)`` long class index of each box or None.
    """

    id: str
    image: Any
    labels: torch.Tensor
    mask: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    box_labels: torch.Tensor | None = None


@dataclass
class Batch:
    """Samples collated by :func:`collate_samples`.

    images: ``(B, C, H, W)`` when every image is a tensor of one shape, else a list (PIL images,
        tensors of different sizes, or Nones in masks-only mode).
    labels: ``(B, num_classes)`` float32.
    masks: ``(B, H, W)`` long when all masks exist and share a size, a list when they differ,
        None when no sample has a mask.
    boxes, box_labels: one entry per sample (a tensor or None).
    """

    ids: list[str]
    images: torch.Tensor | list[Any]
    labels: torch.Tensor
    masks: torch.Tensor | list[torch.Tensor | None] | None
    boxes: list[torch.Tensor | None]
    box_labels: list[torch.Tensor | None]

    def __len__(self) -> int:
        return len(self.ids)


def collate_samples(samples: Sequence[Sample]) -> Batch:
    """A :class:`Batch` from samples; pass as ``DataLoader(..., collate_fn=collate_samples)``."""
    if not samples:
        raise ValueError("collate_samples: no samples to collate")
    images = [s.image for s in samples]
    if _stackable(images):
        images = torch.stack(images)
    masks: torch.Tensor | list[torch.Tensor | None] | None = [s.mask for s in samples]
    if all(m is None for m in masks):
        masks = None
    elif _stackable(masks):
        masks = torch.stack(masks)
    return Batch(
        ids=[s.id for s in samples],
        images=images,
        labels=torch.stack([s.labels for s in samples]),
        masks=masks,
        boxes=[s.boxes for s in samples],
        box_labels=[s.box_labels for s in samples],
    )


def _stackable(items: list[Any]) -> bool:
    return all(isinstance(t, torch.Tensor) for t in items) and len({t.shape for t in items}) == 1


class ImageDataset(Dataset[Sample]):
    """Base of the file-backed data sets: ids, class names and the lazy item logic.

    A subclass sets ``ids`` and ``class_names`` in its constructor (reading index files only)
    and implements :meth:`image_path` and :meth:`annotation` (reading one item's files).

    images: False yields ``image=None`` and skips reading images (masks-only mode, e.g. for
        evaluating pseudo-masks against ground truth when only the masks are on disk).
    transform: applied to the PIL image only; masks and boxes stay at the original size.
    """

    def __init__(
        self,
        ids: Sequence[str],
        class_names: Sequence[str],
        *,
        source: PathLike,
        images: bool = True,
        transform: Transform | None = None,
    ) -> None:
        if len(ids) == 0:
            raise ValueError(f"{source}: empty data set (no images found)")
        if len(class_names) == 0:
            raise ValueError(f"{source}: no class names")
        self.ids: tuple[str, ...] = tuple(ids)
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.images = images
        self.transform = transform

    @property
    def num_classes(self) -> int:
        """Length of ``labels`` (including the background for segmentation sets)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """The image file of item ``index``."""
        raise NotImplementedError

    def annotation(self, index: int, image_size: tuple[int, int] | None) -> Sample:
        """Item ``index`` without its image (``image=None``). ``image_size`` is the image's
        ``(width, height)`` when it was read, else None."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = index % len(self)
        image = None
        if self.images:
            image = load_rgb(self.image_path(index))
        sample = self.annotation(index, None if image is None else image.size)
        if image is not None and sample.mask is not None:
            check_mask_size(sample.mask, image.size, self.image_path(index), sample.id)
        if image is not None and self.transform is not None:
            image = self.transform(image)
        sample.image = image
        return sample

    def mask(self, index: int) -> torch.Tensor | None:
        """The ground-truth mask of item ``index`` alone (no image is read)."""
        return self.annotation(index % len(self), None).mask


def check_mask_size(
    mask: torch.Tensor, image_size: tuple[int, int], image_path: PathLike, sample_id: str
) -> None:
    """A ValueError when a ``(H, W)`` mask does not match a PIL ``(width, height)`` size."""
    width, height = image_size
    if tuple(mask.shape) != (height, width):
        raise ValueError(
            f"{image_path}: mask of {sample_id!r} is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
            f"the image is {width}x{height}"
        )


def read_index_mask(path: PathLike, num_classes: int) -> torch.Tensor:
    """A paletted or grayscale index PNG as ``(H, W)`` long, values checked against the class set.

    Raises FileNotFoundError when missing; ValueError naming the file when it cannot be read,
    is not an index image (e.g. RGB colour-coded), or holds values outside ``0..num_classes-1``
    other than 255."""
    return read_index_mask_and_labels(path, num_classes)[0]


def read_index_mask_and_labels(
    path: PathLike, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`read_index_mask` and the mask's :func:`labels_from_mask`, both from one pass."""
    try:
        with Image.open(path) as image:
            if image.mode not in _INDEX_MASK_MODES:
                raise ValueError(
                    f"{path}: mask has mode {image.mode!r}; expected a paletted ('P') or "
                    "grayscale ('L') index PNG"
                )
            array = np.array(image)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot read mask ({error})") from error
    # The check runs on the decoded array (a 256-bin histogram for 8-bit masks) and the
    # conversion with NumPy: a few cheap passes, no multi-threaded tensor kernels per item.
    if array.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(array.ravel(), minlength=256))
    else:
        values = np.unique(array)
    check_mask_values(values, num_classes, path)
    present = [int(v) for v in values if 0 < v < num_classes and v != IGNORE_INDEX]
    return torch.from_numpy(array.astype(np.int64)), multi_hot(present, num_classes)


def check_mask_values(
    values: torch.Tensor | np.ndarray, num_classes: int, source: PathLike
) -> None:
    """A ValueError naming ``source`` when the mask values ``values`` (a mask, or its distinct
    values) hold labels outside ``0..num_classes-1`` other than 255 (the ignore label)."""
    values = torch.as_tensor(values).flatten()
    bad = values[((values < 0) | (values >= num_classes)) & (values != IGNORE_INDEX)]
    if bad.numel():
        raise ValueError(
            f"{source}: mask has labels {torch.unique(bad)[:10].tolist()} outside the class set "
            f"0..{num_classes - 1} (255 = ignore)"
        )


def labels_from_mask(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes,)`` float32 multi-hot of the classes present in an ``(H, W)`` mask, with
    the background (0), the ignore label (255) and any value outside ``0..num_classes-1``
    excluded."""
    flat = mask.flatten()
    if flat.numel() and int(flat.min()) < 0:
        flat = flat[flat >= 0]
    present = torch.bincount(flat).nonzero().flatten() if flat.numel() else flat
    present = present[(present > 0) & (present < num_classes) & (present != IGNORE_INDEX)]
    labels = torch.zeros(num_classes, dtype=torch.float32, device=mask.device)
    labels[present] = 1.0
    return labels


def multi_hot(classes: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes,)`` float32 with ones at ``classes``."""
    labels = torch.zeros(num_classes, dtype=torch.float32)
    index = torch.as_tensor(classes, dtype=torch.long)
    if index.numel():
        labels[index] = 1.0
    return labels


def read_id_list(path: PathLike, what: str = "split file") -> list[str]:
    """Non-empty, stripped lines of a list file (first whitespace-separated field); a
    FileNotFoundError naming the file and what it is when missing; ValueError when empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path}: empty {what} (no ids)")
    return ids


def read_class_names(path: PathLike) -> list[str]:
    """Class names, one per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class-names file not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: class-names file is empty")
    return names


def image_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`loupe.io.load_rgb` reads it (after its EXIF
    orientation), from its header (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            return oriented_size(image)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from error


def find_images(folder: Path) -> dict[str, Path]:
    """Stem -> image path for the image files directly in ``folder`` (sorted by stem)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise ValueError(f"{folder}: two images with the stem {path.stem!r}")
            found[path.stem] = path
    return found


def rgb_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """A sample's image as ``(3, H, W)`` uint8: a tensor as it is, a PIL image in RGB."""
    return image if isinstance(image, torch.Tensor) else pil_to_tensor(rgb_image(image))
