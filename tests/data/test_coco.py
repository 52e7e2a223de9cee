"""COCO instance JSON -> class-index masks, on a hand-built annotation file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loupe.data import COCO_CLASSES, COCOSegmentation, open_dataset

from .layouts import write_coco, write_image

pytest.importorskip("pycocotools")

# Image 42 (20x10): a person polygon, a later car RLE overlapping it, a dog instance and a
# crowd car region (listed after the dog) that the dog covers in part. Image 5 (8x6) has no
# annotations.
IMAGES = [
    {"id": 42, "file_name": "000000000042.jpg", "width": 20, "height": 10},
    {"id": 5, "file_name": "000000000005.jpg", "width": 8, "height": 6},
]
ANNOTATIONS = [
    {"id": 1, "image_id": 42, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 6, 6],
     "segmentation": [[1, 1, 7, 1, 7, 7, 1, 7]]},
    # Uncompressed RLE, column-major runs starting with zeros: columns 5..9 filled.
    {"id": 2, "image_id": 42, "category_id": 3, "iscrowd": 0, "bbox": [5, 0, 5, 10],
     "segmentation": {"size": [10, 20], "counts": [50, 50, 100]}},
    {"id": 4, "image_id": 42, "category_id": 18, "iscrowd": 0, "bbox": [10, 0, 5, 10],
     "segmentation": {"size": [10, 20], "counts": [100, 50, 50]}},
    # Listed last on purpose: crowd regions are painted first whatever their position.
    {"id": 3, "image_id": 42, "category_id": 3, "iscrowd": 1, "bbox": [12, 0, 8, 10],
     "segmentation": {"size": [10, 20], "counts": [120, 80]}},
]


def expected_mask() -> torch.Tensor:
    """By hand: person (1) on pixels rows/cols 1..6 (pycocotools' edge convention for the
    polygon 1..7), car (2) over it on columns 5..9, dog (3) on columns 10..14 (over the crowd),
    crowd (255) on columns 15..19."""
    mask = torch.zeros(10, 20, dtype=torch.long)
    mask[1:7, 1:7] = 1
    mask[:, 5:10] = 2
    mask[:, 12:20] = 255
    mask[:, 10:15] = 3
    return mask


@pytest.fixture
def coco_root(tmp_path):
    write_coco(tmp_path, ANNOTATIONS, IMAGES)
    return tmp_path


def test_coco_classes_are_the_80_in_category_order() -> None:
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[16] == "dog"
    assert COCO_CLASSES[79] == "toothbrush"


def test_coco_renders_masks_labels_and_boxes(coco_root) -> None:
    data = open_dataset("coco", coco_root, "val2017")
    assert isinstance(data, COCOSegmentation)
    # Categories sorted by id (1, 3, 18) -> classes 1, 2, 3.
    assert data.class_names == ("background", "person", "car", "dog")
    assert data.ids == ("000000000005", "000000000042")
    sample = data[1]
    assert sample.image.size == (20, 10)
    assert torch.equal(sample.mask, expected_mask())
    assert sample.labels.tolist() == [0, 1, 1, 1]
    assert sample.boxes.tolist() == [[1, 1, 7, 7], [5, 0, 10, 10], [10, 0, 15, 10]]
    assert sample.box_labels.tolist() == [1, 2, 3]
    empty = data[0]
    assert empty.mask.shape == (6, 8) and not empty.mask.any() and not empty.labels.any()
    assert empty.boxes.shape == (0, 4)


def test_coco_compressed_rle_and_crowd_only_label(coco_root, tmp_path) -> None:
    from pycocotools import mask as mask_utils

    binary = np.zeros((10, 20), dtype=np.uint8, order="F")
    binary[2:4, 3:9] = 1
    rle = mask_utils.encode(binary)
    rle["counts"] = rle["counts"].decode("ascii")
    anns = [{"id": 9, "image_id": 42, "category_id": 18, "iscrowd": 1, "bbox": [3, 2, 6, 2],
             "segmentation": rle}]
    root = tmp_path / "rle"
    write_coco(root, anns, IMAGES[:1])
    sample = open_dataset("coco", root, "val2017", images=False)[0]
    assert sample.image is None
    assert torch.equal(sample.mask, torch.from_numpy(binary.astype(np.int64)) * 255)
    assert sample.labels.tolist() == [0, 0, 0, 1]  # a crowd region still says "dog is here"
    assert sample.boxes.shape == (0, 4)  # crowd boxes are not instance boxes


def test_coco_skip_empty_and_explicit_paths(coco_root) -> None:
    data = open_dataset("coco", coco_root, "val2017", skip_empty=True)
    assert data.ids == ("000000000042",)
    moved = coco_root / "elsewhere.json"
    (coco_root / "annotations" / "instances_val2017.json").rename(moved)
    (coco_root / "val2017").rename(coco_root / "imgs")
    data = COCOSegmentation(coco_root, "val2017", annotation_file=moved,
                            image_dir=coco_root / "imgs")
    assert torch.equal(data[1].mask, expected_mask())


def test_coco_errors(coco_root, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"instances_train2017\.json: COCO annotation"):
        open_dataset("coco", coco_root, "train2017")
    path = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_val2017\.json: annotation 1 has "
                                         r"category_id 99"):
        open_dataset("coco", coco_root, "val2017")
    path.write_text('{"images": []}')
    with pytest.raises(ValueError, match="not a COCO instance file"):
        open_dataset("coco", coco_root, "val2017")
    path.write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(ValueError, match=r"instances_val2017\.json: empty data set"):
        open_dataset("coco", coco_root, "val2017")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read COCO annotation JSON"):
        open_dataset("coco", coco_root, "val2017")


def test_coco_image_size_differs_from_annotation(coco_root) -> None:
    write_image(coco_root / "val2017" / "000000000042.jpg", size=(10, 10))
    data = open_dataset("coco", coco_root, "val2017")
    with pytest.raises(ValueError, match=r"000000000042\.jpg: mask of '000000000042' is 20x10"):
        data[1]


def test_coco_unreadable_segmentation(coco_root) -> None:
    path = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["segmentation"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation 2 has an unreadable segmentation"):
        open_dataset("coco", coco_root, "val2017")[1]
