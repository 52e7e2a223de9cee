"""The Ultralytics YOLO segmentation layout, rasterised to class-index masks.

Layout (Ultralytics, https://docs.ultralytics.com/datasets/segment/)::

    root/images/<split>/<id>.jpg
    root/labels/<split>/<id>.txt     one object a line: ``class x1 y1 x2 y2 ...``
    root/data.yaml                   optional: ``names:`` (list or ``index: name`` mapping)

``class`` is a 0-based class id; the ``x y`` pairs are a polygon in coordinates normalised to
[0, 1] by the image's width and height. Rasterisation rules:

- class id ``k`` becomes mask label ``k + 1`` (0 = background); ``class_names[0]`` is
  ``"background"`` followed by the data set's names.
- Each polygon is filled with PIL ``ImageDraw.polygon`` at the image's size (vertices at
  ``x * W, y * H``; PIL fills the outline pixels too), in file order: where objects overlap
  the later line wins.
- An image without a label file has no objects (all background, no labels). A label file
  without an image is ignored with a logged warning.
- Image-level labels are the classes of all lines; boxes are each polygon's extent in pixels.

Malformed lines (not a class id followed by at least three ``x y`` pairs in [0, 1], or a class
id outside the names) raise a ValueError naming the file and line number.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from loupe.data.base import (
    ImageDataset,
    PathLike,
    Sample,
    Transform,
    find_images,
    image_size,
    multi_hot,
)

logger = logging.getLogger(__name__)

YoloObject = tuple[int, list[tuple[float, float]]]


class YOLOSegmentation(ImageDataset):
    """A YOLO segmentation split as semantic masks (rules in the module docstring).

    Args:
        root: the data-set folder holding ``images/`` and ``labels/``.
        split: sub-folder name (``train2017``, ``val``...); None for flat ``images/``, ``labels/``.
        names: the class names without background, in class-id order.
        data_yaml: a file with a ``names:`` entry (default ``root/data.yaml`` when present).
        images: False renders masks without decoding images (only their headers are read).
        transform: applied to the PIL image.
    """

    def __init__(
        self,
        root: PathLike,
        split: str | None = None,
        *,
        names: Sequence[str] | None = None,
        data_yaml: PathLike | None = None,
        images: bool = True,
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        self.image_dir = self.root / "images" / (split or "")
        self.label_dir = self.root / "labels" / (split or "")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.image_dir}: YOLO image folder not found")
        if isinstance(names, str):
            raise ValueError(f"names must be a list of class names, got the string {names!r}")
        if names is None:
            yaml_path = Path(data_yaml) if data_yaml else self.root / "data.yaml"
            if not yaml_path.is_file():
                raise ValueError(
                    f"{self.root}: no class names: pass names=[...] or data_yaml= (a file with "
                    f"a 'names:' entry); {yaml_path} not found"
                )
            names = read_yaml_names(yaml_path)
        self._image_paths = find_images(self.image_dir)
        self.orphan_labels = _orphan_labels(self.label_dir, self._image_paths)
        if self.orphan_labels:
            logger.warning(
                "%s: %d label file(s) without an image are ignored: %s",
                self.label_dir, len(self.orphan_labels),
                ", ".join(p.name for p in self.orphan_labels[:10]),
            )
        super().__init__(
            list(self._image_paths), ["background", *names], source=self.image_dir,
            images=images, transform=transform,
        )

    def image_path(self, index: int) -> Path:
        return self._image_paths[self.ids[index]]

    def label_path(self, index: int) -> Path:
        """The label file of item ``index`` (which may not exist: no objects)."""
        return self.label_dir / f"{self.ids[index]}.txt"

    def has_label_file(self, index: int) -> bool:
        return self.label_path(index).is_file()

    def annotation(self, index: int, image_size_: tuple[int, int] | None) -> Sample:
        width, height = image_size_ or image_size(self.image_path(index))
        label_path = self.label_path(index)
        objects = read_yolo_label_file(label_path, self.num_classes - 1) if (
            label_path.is_file()
        ) else []
        mask = rasterize_polygons(objects, width, height)
        boxes = torch.tensor(
            [_polygon_box(points, width, height) for _, points in objects], dtype=torch.float32
        ).reshape(-1, 4)
        box_labels = torch.tensor([k + 1 for k, _ in objects], dtype=torch.long)
        return Sample(
            id=self.ids[index], image=None, labels=multi_hot(box_labels, self.num_classes),
            mask=mask, boxes=boxes, box_labels=box_labels,
        )


def read_yolo_label_file(path: PathLike, num_classes: int) -> list[YoloObject]:
    """``[(class_id, [(x, y), ...]), ...]`` from a YOLO segmentation label file; 0-based class
    ids checked against ``num_classes`` (without background). Blank lines are skipped."""
    objects: list[YoloObject] = []
    text = Path(path).read_text()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            values = [float(f) for f in fields]
        except ValueError as error:
            raise ValueError(f"{where}: not a number ({error})") from error
        class_value, coords = values[0], values[1:]
        if not class_value.is_integer():
            raise ValueError(f"{where}: class id {fields[0]!r} is not an integer")
        class_id = int(class_value)
        if not 0 <= class_id < num_classes:
            raise ValueError(
                f"{where}: class id {class_id} outside 0..{num_classes - 1} (the class names)"
            )
        if len(coords) < 6 or len(coords) % 2:
            raise ValueError(
                f"{where}: expected a class id and at least 3 x y pairs (a polygon), got "
                f"{len(coords)} coordinates"
            )
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in coords):
            raise ValueError(f"{where}: polygon coordinates must be normalised to [0, 1]")
        objects.append((class_id, list(zip(coords[0::2], coords[1::2], strict=True))))
    return objects


def rasterize_polygons(objects: Sequence[YoloObject], width: int, height: int) -> torch.Tensor:
    """``(height, width)`` long mask: each polygon filled with ``class_id + 1``, later over
    earlier, background 0."""
    mode = "L" if all(k + 1 < 255 for k, _ in objects) else "I"
    canvas = Image.new(mode, (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for class_id, points in objects:
        draw.polygon([(x * width, y * height) for x, y in points], fill=class_id + 1)
    return torch.from_numpy(np.asarray(canvas).astype(np.int64))


def _polygon_box(points: list[tuple[float, float]], width: int, height: int) -> list[float]:
    xs = [x * width for x, _ in points]
    ys = [y * height for _, y in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def _orphan_labels(label_dir: Path, image_paths: dict[str, Path]) -> list[Path]:
    if not label_dir.is_dir():
        return []
    return sorted(p for p in label_dir.glob("*.txt") if p.stem not in image_paths)


def read_yaml_names(path: PathLike) -> list[str]:
    """The ``names:`` entry of a data.yaml-like file, without a YAML library.

    Accepted forms: ``names: [a, b]``, a block list (``- a``) or a block mapping
    (``0: a``) under ``names:``. Quotes around names are removed."""
    lines = Path(path).read_text().splitlines()
    for start, line in enumerate(lines):
        match = re.match(r"^names\s*:\s*(.*?)\s*(#.*)?$", line)
        if not match:
            continue
        inline = match.group(1)
        if inline:
            if not (inline.startswith("[") and inline.endswith("]")):
                raise ValueError(f"{path}:{start + 1}: 'names:' must be a list or a mapping")
            return [_unquote(n) for n in inline[1:-1].split(",") if n.strip()]
        names: dict[int, str] = {}
        items: list[str] = []
        for number, item in enumerate(lines[start + 1:], start=start + 2):
            if not item.strip() or item.strip().startswith("#"):
                continue
            if not item[0].isspace() and not item.startswith("-"):
                break
            entry = item.strip()
            if entry.startswith("- "):
                items.append(_unquote(entry[2:]))
            elif (pair := re.match(r"^(\d+)\s*:\s*(.+)$", entry)) is not None:
                names[int(pair.group(1))] = _unquote(pair.group(2))
            else:
                raise ValueError(f"{path}:{number}: cannot read class name entry {entry!r}")
        if names:
            if sorted(names) != list(range(len(names))):
                raise ValueError(f"{path}: 'names:' indices must be 0..{len(names) - 1}")
            return [names[i] for i in range(len(names))]
        if items:
            return items
        raise ValueError(f"{path}:{start + 1}: 'names:' is empty")
    raise ValueError(f"{path}: no 'names:' entry")


def _unquote(text: str) -> str:
    text = text.split(" #")[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text
