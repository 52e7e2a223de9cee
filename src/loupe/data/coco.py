"""MS COCO 2014/2017 instance annotations rendered to semantic class-index masks.

Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014. Polygons and RLEs are
decoded with ``pycocotools`` (the ``coco`` extra).

Layout (or pass ``annotation_file`` / ``image_dir``)::

    root/annotations/instances_<split>.json     e.g. instances_val2017.json
    root/<split>/<file_name>                    e.g. val2017/000000000139.jpg
                                                (root/images/<split>/ is also accepted)

Rendering rules:

- The categories of the JSON, sorted by category id (1..90 with gaps for COCO), become class
  indices 1..K (K = 80 for COCO); 0 is the background.
- Crowd annotations (``iscrowd=1``) are painted 255 (ignore) first; then the non-crowd
  instances are painted in annotation order, so where instances overlap the later annotation
  wins, and an instance covering a crowd region replaces the 255.
- Image-level labels are the classes of all annotations of the image, crowd included.
- Boxes are the non-crowd annotations' ``bbox`` (``x, y, w, h`` -> ``x0, y0, x0+w, y0+h``).
- Sample ids are the image file stems (``000000000139``).
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loupe.data.base import (
    IGNORE_INDEX,
    ImageDataset,
    PathLike,
    Sample,
    Transform,
    multi_hot,
)

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
"""The 80 COCO categories in category-id order (0-based YOLO ids; data-set index = id + 1)."""


def _mask_utils() -> Any:
    try:
        from pycocotools import mask as mask_utils
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading COCO annotations needs pycocotools: pip install 'loupe[coco]'"
        ) from error
    return mask_utils


class COCOSegmentation(ImageDataset):
    """COCO as a semantic segmentation set: class indices 0 (background), 1..K, 255 (crowd).

    Args:
        root: the COCO folder (see the module docstring for the layout).
        split: ``train2017``, ``val2017``, ``train2014``, ``val2014``, ...
        annotation_file: the instance JSON (default ``root/annotations/instances_<split>.json``).
        image_dir: the image folder (default ``root/<split>`` or ``root/images/<split>``).
        skip_empty: leave out images without any annotation.
        images: False renders masks without reading the images.
        transform: applied to the PIL image.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "val2017",
        *,
        annotation_file: PathLike | None = None,
        image_dir: PathLike | None = None,
        skip_empty: bool = False,
        images: bool = True,
        transform: Transform | None = None,
    ) -> None:
        root = Path(root)
        self.annotation_file = Path(annotation_file) if annotation_file else (
            root / "annotations" / f"instances_{split}.json"
        )
        if not self.annotation_file.is_file():
            raise FileNotFoundError(f"{self.annotation_file}: COCO annotation file not found")
        data = _read_json(self.annotation_file)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self._class_of_category = {c["id"]: i + 1 for i, c in enumerate(categories)}
        class_names = ["background"] + [c["name"] for c in categories]
        annotations: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in data["annotations"]:
            if ann["category_id"] not in self._class_of_category:
                raise ValueError(
                    f"{self.annotation_file}: annotation {ann.get('id')} has category_id "
                    f"{ann['category_id']}, which is not in 'categories'"
                )
            annotations[ann["image_id"]].append(ann)
        records = sorted(data["images"], key=lambda r: r["id"])
        if skip_empty:
            records = [r for r in records if annotations.get(r["id"])]
        self._records = records
        self._annotations = [annotations.get(r["id"], []) for r in records]
        ids = [Path(r["file_name"]).stem for r in records]
        super().__init__(
            ids, class_names, source=self.annotation_file, images=images, transform=transform
        )
        if image_dir is None:
            image_dir = root / split
            if not image_dir.is_dir() and (root / "images" / split).is_dir():
                image_dir = root / "images" / split
        self.image_dir = Path(image_dir)
        if images and not self.image_dir.is_dir():
            raise FileNotFoundError(
                f"{self.image_dir}: COCO image folder not found (pass image_dir= or images=False)"
            )

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._records[index]["file_name"]

    def annotation(self, index: int, image_size: tuple[int, int] | None) -> Sample:
        anns = self._annotations[index]
        mask = self.render_mask(index)
        classes = [self._class_of_category[a["category_id"]] for a in anns]
        solid = [a for a in anns if not a.get("iscrowd", 0)]
        boxes = torch.tensor(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in solid)],
            dtype=torch.float32,
        ).reshape(-1, 4)
        box_labels = torch.tensor(
            [self._class_of_category[a["category_id"]] for a in solid], dtype=torch.long
        )
        return Sample(
            id=self.ids[index], image=None, labels=multi_hot(classes, self.num_classes),
            mask=mask, boxes=boxes, box_labels=box_labels,
        )

    def render_mask(self, index: int) -> torch.Tensor:
        """``(H, W)`` long class-index mask of item ``index`` (rules in the module docstring)."""
        record = self._records[index]
        height, width = int(record["height"]), int(record["width"])
        mask = np.zeros((height, width), dtype=np.uint8)
        anns = self._annotations[index]
        ordered = [a for a in anns if a.get("iscrowd", 0)] + [
            a for a in anns if not a.get("iscrowd", 0)
        ]
        for ann in ordered:
            value = IGNORE_INDEX if ann.get("iscrowd", 0) else self._class_of_category[
                ann["category_id"]
            ]
            mask[self._decode(ann, height, width)] = value
        return torch.from_numpy(mask).long()

    def _decode(self, ann: dict[str, Any], height: int, width: int) -> np.ndarray:
        mask_utils = _mask_utils()
        segmentation = ann.get("segmentation")
        try:
            if isinstance(segmentation, list):
                polygons = [p for p in segmentation if len(p) >= 6]
                if not polygons:
                    return np.zeros((height, width), dtype=bool)
                rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
                rle = mask_utils.frPyObjects(segmentation, height, width)
            elif isinstance(segmentation, dict):
                rle = segmentation
            else:
                raise TypeError(f"unsupported segmentation {type(segmentation).__name__}")
            with warnings.catch_warnings():
                # pycocotools' own NumPy-2 DeprecationWarning about __array__(copy=...).
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = mask_utils.decode(rle)
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(
                f"{self.annotation_file}: annotation {ann.get('id')} has an unreadable "
                f"segmentation ({error})"
            ) from error
        if decoded.shape[:2] != (height, width):
            raise ValueError(
                f"{self.annotation_file}: annotation {ann.get('id')} segmentation is "
                f"{decoded.shape[1]}x{decoded.shape[0]}, but image_id {ann.get('image_id')} "
                f"is {width}x{height}"
            )
        return decoded.astype(bool)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read COCO annotation JSON ({error})") from error
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a COCO instance file (missing {', '.join(missing)})")
    return data
