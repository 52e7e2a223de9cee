"""The images of a faithfulness run, in batches: model input at one size, the classes each image
is explained for, and each target's region for the pointing games.

- A data set (:class:`~loupe.data.spec.DatasetSpec`): the targets are each image's
  ground-truth classes that have a counterpart in the classifier, each explained for its
  best-scoring classifier class (:func:`loupe.mapsets.generate.batch_targets`, as ``loupe
  maps``), or with ``topk`` the K best-scoring data-set classes; the region of a target is its
  class's mask pixels or the union of its boxes. Images without a target are left out.
- Image files: the targets are the classifier's top-``topk`` classes (default 1); no regions.

Every image is resized to ``size x size`` (bilinear, antialiased; masks nearest, boxes scaled),
so the images of a batch stack and the perturbation metrics see the model's input size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from loupe.data.base import IMAGE_SUFFIXES, rgb_tensor
from loupe.data.mapping import ClassMapping, class_correspondence
from loupe.data.spec import open_spec, selected_count
from loupe.faithfulness.config import FaithfulnessConfig
from loupe.io import load_rgb
from loupe.mapsets.generate import batch_targets
from loupe.metrics.boxes import inclusive_boxes
from loupe.metrics.pointing import box_regions
from loupe.models import Classifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageBatch:
    """ids: the images; images: ``(B, 3, S, S)`` normalised model input; targets: ``(B, K)``
    classifier classes (-1 = padding); names: what each valid target is (``"cat (285)"``);
    regions: ``(B, K, S, S)`` bool, or None without regions."""

    ids: tuple[str, ...]
    images: torch.Tensor
    targets: torch.Tensor
    names: tuple[tuple[str, ...], ...]
    regions: torch.Tensor | None


@dataclass(frozen=True)
class ImageSource:
    """What a run reads. items: a Dataset of ``(index, (3, H, W) uint8 image, annotation)``;
    ids: the images, in order; class_names: the data set's (None for image files); mapping:
    data-set classes -> classifier classes; correspondence: how it was chosen; regions:
    ``masks``, ``boxes`` or ``none``."""

    items: Dataset
    ids: tuple[str, ...]
    class_names: tuple[str, ...] | None
    mapping: ClassMapping | None
    regions: str
    correspondence: dict[str, Any] = field(default_factory=dict)


def image_files(paths: Sequence[Path]) -> list[Path]:
    """Image files named directly or found in folders (by suffix, sorted); folder members
    that PIL cannot identify (a text ``LICENSE.png``) are skipped with a warning. Errors name
    the path: a missing path, a named file that is not an image, a folder without images."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            members = sorted(p for p in path.iterdir() if p.is_file()
                             and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            readable = [p for p in members if _is_image(p, skip=True)]
            if not readable:
                raise FileNotFoundError(f"--images {path}: no images in this folder (looked for "
                                        f"{', '.join(IMAGE_SUFFIXES)})")
            found += readable
        elif path.is_file():
            _is_image(path, skip=False)
            found.append(path)
        else:
            raise FileNotFoundError(f"--images {path}: no such image file or folder")
    names = [p.name for p in found]
    twins = sorted({n for n in names if names.count(n) > 1})
    if twins:
        raise ValueError(f"--images: two images are named {twins[0]!r}; the results are keyed "
                         "by file name")
    return found


def _is_image(path: Path, skip: bool) -> bool:
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - reading the header is the check
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if skip and isinstance(error, UnidentifiedImageError):
            logger.warning("skipping %s: not an image", path)
            return False
        raise ValueError(f"--images {path}: cannot read image ({error})") from None
    return True


class _DatasetItems(Dataset):
    """``(index, image, (labels, mask, boxes, box_labels))`` of the first ``count`` samples."""

    def __init__(self, dataset: Any, count: int) -> None:
        self.dataset, self.count = dataset, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, tuple]:
        sample = self.dataset[index]
        return index, rgb_tensor(sample.image), (sample.labels, sample.mask, sample.boxes,
                                                 sample.box_labels)


class _FileItems(Dataset):
    """``(index, image, None)`` of image files."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, None]:
        return index, rgb_tensor(load_rgb(self.paths[index])), None


def open_source(config: FaithfulnessConfig, classifier: Classifier) -> ImageSource:
    """The images, class correspondence and region kind of ``config`` (see the module
    docstring); a ValueError when ``--regions masks/boxes`` asks for what the data set lacks."""
    if config.dataset is None:
        paths = image_files(config.images)
        if config.regions in ("masks", "boxes"):
            raise ValueError(f"--regions {config.regions}: image files have no regions")
        return ImageSource(_FileItems(paths), tuple(p.name for p in paths), None, None, "none")
    dataset = open_spec(config.dataset, images=True)
    count = selected_count(dataset, config.dataset)
    if count == 0:
        raise ValueError(f"--dataset {config.dataset.kind}: no images")
    mapping, correspondence = class_correspondence(
        dataset.class_names, classifier.num_outputs, model_offset=classifier.label_offset,
        class_map=config.class_map, label_offset=config.label_offset,
    )
    first = dataset[0]
    has = {"masks": first.mask is not None, "boxes": first.boxes is not None}
    regions = config.regions
    if regions == "auto":
        regions = next((kind for kind in ("masks", "boxes") if has[kind]), "none")
    elif regions != "none" and not has[regions]:
        raise ValueError(f"--regions {regions}: the data set has no {regions}")
    return ImageSource(_DatasetItems(dataset, count), tuple(dataset.ids[:count]),
                       tuple(dataset.class_names), mapping, regions, correspondence)


def image_batches(source: ImageSource, classifier: Classifier, model: nn.Module, *,
                  size: int, batch_size: int, topk: int | None, workers: int = 0,
                  device: torch.device | str = "cpu", progress: str | None = None,
                  ) -> Iterator[ImageBatch]:
    """The batches of ``source`` (see the module docstring) on ``device``; ``model`` is
    ``classifier.model`` on that device. ``progress``: the label of a progress bar over the
    images (None: no bar)."""
    loader = DataLoader(source.items, batch_size=batch_size, num_workers=workers,
                        collate_fn=_keep_list)
    bar = tqdm(total=len(source.ids), unit="img", desc=progress, dynamic_ncols=True,
               disable=progress is None)
    with bar:
        for items in loader:
            batch = _batch(source, classifier, model, items, size, topk, torch.device(device))
            if batch is not None:
                yield batch
            bar.update(len(items))


def _keep_list(items: list) -> list:
    return items


def _batch(source: ImageSource, classifier: Classifier, model: nn.Module, items: list,
           size: int, topk: int | None, device: torch.device) -> ImageBatch | None:
    """One batch of loaded items: the images with at least one target (None if none has)."""
    pixels = torch.stack([_resized(item[1].to(device), size) for item in items])
    x = classifier.preprocessing(pixels)
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("--model does not return class logits (B, classes)")
    if source.mapping is None:
        chosen = logits.topk(min(topk or 1, logits.shape[1]), dim=1).indices
        rows = [[(int(c), int(c)) for c in row] for row in chosen]
    else:
        labels = torch.stack([item[2][0] for item in items]).to(device)
        picked = batch_targets(logits, labels, source.mapping, topk)
        rows = [[(int(c), int(m)) for c, m in zip(classes, outputs, strict=True) if m >= 0]
                for classes, outputs in zip(picked.classes, picked.model_classes, strict=True)]
    kept = [i for i, row in enumerate(rows) if row]
    if not kept:
        return None
    width = max(len(rows[i]) for i in kept)
    targets = torch.full((len(kept), width), -1, dtype=torch.long, device=device)
    for j, i in enumerate(kept):
        targets[j, : len(rows[i])] = torch.tensor([m for _, m in rows[i]])
    regions = None
    if source.regions != "none":
        regions = torch.zeros(len(kept), width, size, size, dtype=torch.bool, device=device)
        for j, i in enumerate(kept):
            regions[j, : len(rows[i])] = _regions(source, items[i], [c for c, _ in rows[i]],
                                                  size).to(device)
    names = tuple(tuple(_target_name(source, classifier, c, m) for c, m in rows[i])
                  for i in kept)
    return ImageBatch(tuple(source.ids[items[i][0]] for i in kept), x[kept], targets, names,
                      regions)


def _resized(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> float in [0, 1] at ``size x size``."""
    pixels = image.float() / 255
    if tuple(pixels.shape[-2:]) == (size, size):
        return pixels
    return F.interpolate(pixels[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def _regions(source: ImageSource, item: tuple, classes: list[int], size: int) -> torch.Tensor:
    """``(K, size, size)`` bool: the mask pixels or the boxes of each data-set class."""
    index, image, (_, mask, boxes, box_labels) = item
    sample_id = source.ids[index]
    if source.regions == "masks":
        if mask is None:
            raise ValueError(f"image {sample_id}: no mask (--regions masks)")
        resized = F.interpolate(mask[None, None].float(), size=(size, size),
                                mode="nearest-exact")[0, 0].long()
        return torch.stack([resized == c for c in classes])
    if boxes is None or box_labels is None:
        raise ValueError(f"image {sample_id}: no boxes (--regions boxes)")
    height, width = image.shape[-2:]
    scale = torch.tensor([size / width, size / height] * 2, dtype=torch.float64)
    pixel_boxes = inclusive_boxes(boxes.double() * scale).clamp(0, size - 1)
    return torch.stack([box_regions(pixel_boxes[box_labels == c], size, size) for c in classes])


def _target_name(source: ImageSource, classifier: Classifier, data_class: int,
                 output: int) -> str:
    """``"cat (285)"``: the data-set class (or the classifier's class name) and the output."""
    if source.class_names is not None:
        return f"{source.class_names[data_class]} ({output})"
    names = classifier.class_names
    return f"{names[output].split(',')[0]} ({output})" if names else str(output)
