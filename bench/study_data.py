"""Data of the shuffle-saliency study: derived folder data sets that ``loupe maps`` and
``loupe evaluate`` read as they are (``--dataset folder``).

coco128-seg through an ImageNet classifier
    Only images with at least one ground-truth class that has an ImageNet counterpart in the
    shipped ``coco_to_imagenet.json`` are kept. Ground-truth pixels of classes without a
    counterpart (person, giraffe, ...) become 255 (ignored): no map can be made for them, so
    counting them would only measure the mapping. Image-level labels (``labels.json``) are
    the image's mappable YOLO classes. Images are symbolic links to the shared assets (never
    copies); masks are paletted PNGs in the COCO-80 label space (class id + 1, 0 background).

The three VOC samples (assets/voc/samples)
    Colour-coded VOC masks turned into index masks (VOC palette), ImageNet counterparts of
    the three classes present (aeroplane, sheep, bird) in a JSON class map.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from loupe.data import COCO_CLASSES, VOC_CLASSES, class_mapping, load_name_table, open_dataset
from loupe.io import atomic_path
from loupe.masks.palette import save_mask_png, voc_palette

logger = logging.getLogger(__name__)

IGNORE = 255
# VOC class -> ImageNet-1k indices, the same sets as the COCO table's airplane/sheep/bird.
VOC_TABLE_FROM_COCO = {"aeroplane": "airplane", "sheep": "sheep", "bird": "bird"}


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _link(target: Path, link: Path) -> None:
    """A symbolic link ``link -> target`` (replaced if it points elsewhere)."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def prepare_coco(assets: Path, out: Path) -> dict[str, object]:
    """Write the mapped coco128 folder data set into ``out``; returns what it holds.

    Layout: ``images/<id>.jpg`` (links), ``masks/<id>.png``, ``class_names.txt`` (background +
    the 80 COCO names), ``labels.json`` ({id: [mappable classes]}), ``class_map.json`` (the
    shipped COCO -> ImageNet table, for ``loupe maps --class-map``)."""
    root = assets / "coco128-seg"
    dataset = open_dataset("yolo", root, "train2017", names=list(COCO_CLASSES), images=False)
    table = load_name_table()
    mapping = class_mapping(dataset.class_names, table, 1000)
    mappable = torch.tensor([bool(members) for members in mapping])
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[int]] = {}
    ignored_pixels = counted_pixels = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        present = (sample.labels > 0) & mappable
        if not bool(present.any()):
            continue
        mask = sample.mask.clone()
        unmapped = (mask > 0) & ~mappable[mask.clamp(max=len(mapping) - 1)]
        mask[unmapped] = IGNORE
        ignored_pixels += int(unmapped.sum())
        counted_pixels += int((~unmapped).sum())
        image_path = dataset.image_path(index)
        _link(image_path.resolve(), out / "images" / image_path.name)
        save_mask_png(out / "masks" / f"{sample.id}.png", mask)
        labels[sample.id] = present.nonzero().flatten().tolist()
    _write_text(out / "class_names.txt", "\n".join(dataset.class_names) + "\n")
    _write_text(out / "labels.json", json.dumps(labels, indent=1) + "\n")
    _write_text(out / "class_map.json", json.dumps(table, indent=1) + "\n")
    info = {
        "images": len(labels),
        "of": len(dataset),
        "maps": sum(len(v) for v in labels.values()),
        "classes_present": sorted({dataset.class_names[c] for v in labels.values() for c in v}),
        "ignored_pixel_fraction": ignored_pixels / max(ignored_pixels + counted_pixels, 1),
    }
    _write_text(out / "study_data.json", json.dumps(info, indent=1) + "\n")
    logger.info("coco128 mapped: %d of %d images, %d maps", info["images"], len(dataset),
                info["maps"])
    return info


def voc_index_mask(path: Path) -> torch.Tensor:
    """A colour-coded VOC mask (RGB in the VOC palette) as ``(H, W)`` long class indices; a
    ValueError naming the file for a colour that is not in the palette."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    palette = np.asarray(voc_palette(), dtype=np.int64).reshape(256, 3)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    table = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(palette)}
    values, inverse = np.unique(codes, return_inverse=True)
    unknown = [v for v in values.tolist() if v not in table]
    if unknown:
        raise ValueError(f"{path}: colours outside the VOC palette: {unknown[:5]}")
    indices = np.asarray([table[v] for v in values.tolist()], dtype=np.int64)
    return torch.from_numpy(indices[inverse].reshape(codes.shape))


def prepare_voc_samples(assets: Path, out: Path) -> dict[str, object]:
    """Write the three VOC samples as a folder data set (VOC's 21 classes) with
    ``class_map.json`` giving aeroplane, sheep and bird their ImageNet counterparts."""
    root = assets / "voc" / "samples"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    coco = load_name_table()
    table = {voc: coco[name] for voc, name in VOC_TABLE_FROM_COCO.items()}
    labels = {}
    for image_path in sorted(root.glob("*_image.png")):
        sample_id = image_path.name.removesuffix("_image.png")
        mask = voc_index_mask(root / f"{sample_id}_target.png")
        present = sorted(int(c) for c in mask.unique() if 0 < int(c) < len(VOC_CLASSES))
        if not all(VOC_CLASSES[c] in table for c in present):
            raise ValueError(f"{image_path}: a class without a counterpart in {sorted(table)}")
        _link(image_path.resolve(), out / "images" / f"{sample_id}.png")
        save_mask_png(out / "masks" / f"{sample_id}.png", mask)
        labels[sample_id] = present
    _write_text(out / "class_names.txt", "\n".join(VOC_CLASSES) + "\n")
    _write_text(out / "labels.json", json.dumps(labels, indent=1) + "\n")
    _write_text(out / "class_map.json", json.dumps(table, indent=1) + "\n")
    return {"images": len(labels), "maps": sum(len(v) for v in labels.values())}
