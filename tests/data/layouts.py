"""Writers of tiny data sets in the real on-disk layouts (16x16 images), for the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16


def write_image(path: Path, size: tuple[int, int] = (SIZE, SIZE), seed: int = 0) -> None:
    """A random RGB image of ``size`` (width, height); format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_mask(path: Path, mask: np.ndarray, mode: str = "P") -> None:
    """An index PNG (paletted with a VOC-like palette, or grayscale)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes(mode, (data.shape[1], data.shape[0]), data.tobytes())
    if mode == "P":
        palette = np.random.default_rng(1).integers(0, 256, 768, dtype=np.uint8)
        image.putpalette(palette.tolist())
    image.save(path)


def block_mask(blocks: list[tuple[int, int, int, int, int]], size: int = SIZE) -> np.ndarray:
    """A (size, size) mask with ``(value, y0, y1, x0, x1)`` rectangles painted in order."""
    mask = np.zeros((size, size), dtype=np.uint8)
    for value, y0, y1, x0, x1 in blocks:
        mask[y0:y1, x0:x1] = value
    return mask


# Three VOC ids with their masks: classes present are {1, 15}, {12}, {7, 255 border}.
VOC_MASKS = {
    "2007_000001": block_mask([(1, 0, 8, 0, 8), (15, 8, 16, 8, 16)]),
    "2007_000002": block_mask([(12, 2, 10, 2, 10)]),
    "2008_000003": block_mask([(7, 4, 12, 4, 12), (255, 3, 4, 3, 13)]),
}


def write_voc(root: Path, aug: bool = False) -> Path:
    """``root/VOCdevkit/VOC2012`` with JPEGImages, SegmentationClass (and Aug), ImageSets and
    Annotations (boxes); returns the VOCdevkit folder."""
    voc = root / "VOCdevkit" / "VOC2012"
    ids = list(VOC_MASKS)
    for seed, (sample_id, mask) in enumerate(VOC_MASKS.items()):
        write_image(voc / "JPEGImages" / f"{sample_id}.jpg", seed=seed)
        write_mask(voc / "SegmentationClass" / f"{sample_id}.png", mask)
        if aug:
            write_mask(voc / "SegmentationClassAug" / f"{sample_id}.png", mask, mode="L")
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (lists / "val.txt").write_text(ids[2] + "\n")
    (lists / "empty.txt").write_text("\n")
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "val.txt").write_text("\n".join(ids) + "\n")
    objects = {
        "2007_000001": [("aeroplane", 1, 1, 8, 8, 0), ("person", 9, 9, 16, 16, 1)],
        "2007_000002": [("dog", 3, 3, 10, 10, 0)],
        "2008_000003": [("car", 5, 5, 12, 12, 0)],
    }
    for sample_id, objs in objects.items():
        body = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin>"
            f"<ymin>{b}</ymin><xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
            for n, a, b, c, e, d in objs
        )
        path = voc / "Annotations" / f"{sample_id}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<annotation><filename>{sample_id}.jpg</filename>{body}</annotation>")
    return root / "VOCdevkit"


def write_cls_labels(path: Path, labels: dict[str, list[int]]) -> None:
    """An IRN-style ``cls_labels.npy``: pickled dict int(id) -> float32[20] (classes 1..20)."""
    table = {}
    for sample_id, classes in labels.items():
        row = np.zeros(20, dtype=np.float32)
        row[[c - 1 for c in classes]] = 1.0
        table[int(sample_id.replace("_", ""))] = row
    np.save(path, table, allow_pickle=True)


def write_yolo(root: Path, lines: dict[str, str], images: list[str], names: list[str]) -> None:
    """``root/images/train``, ``root/labels/train`` and a data.yaml with ``names``."""
    for seed, stem in enumerate(images):
        write_image(root / "images" / "train" / f"{stem}.jpg", size=(20, 10), seed=seed)
    for stem, text in lines.items():
        path = root / "labels" / "train" / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    block = "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nnames:\n{block}")


def write_coco(root: Path, annotations: list[dict], images: list[dict]) -> Path:
    """``root/annotations/instances_val2017.json`` and the images in ``root/val2017``; three
    categories with COCO-like gappy ids 1 (person), 3 (car), 18 (dog)."""
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
        ],
    }
    path = root / "annotations" / "instances_val2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    for seed, record in enumerate(images):
        write_image(root / "val2017" / record["file_name"],
                    size=(record["width"], record["height"]), seed=seed)
    return path
