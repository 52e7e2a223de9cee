"""The Ultralytics YOLO segmentation layout on tiny hand-made label files."""

from __future__ import annotations

import logging

import pytest
import torch

from loupe.data import YOLOSegmentation, open_dataset
from loupe.data.yolo import rasterize_polygons, read_yaml_names

from .layouts import write_yolo

NAMES = ["cat", "dog", "car"]
# Image "a" is 20 wide, 10 high. Object 1: cat on x 2..8, y 2..8 px; object 2 (later, wins
# the overlap): dog on x 6..12, y 0..5 px.
LINES = {
    "a": "0 0.1 0.2 0.4 0.2 0.4 0.8 0.1 0.8\n\n1 0.3 0.0 0.6 0.0 0.6 0.5 0.3 0.5\n",
    "orphan": "2 0 0 1 0 1 1\n",
}


def expected_a() -> torch.Tensor:
    """By hand: PIL fills the polygon including its outline pixels."""
    mask = torch.zeros(10, 20, dtype=torch.long)
    mask[2:9, 2:9] = 1
    mask[0:6, 6:13] = 2
    return mask


@pytest.fixture
def yolo_root(tmp_path):
    write_yolo(tmp_path, LINES, ["a", "b"], NAMES)
    return tmp_path


def test_yolo_rasterises_polygons_later_over_earlier(yolo_root, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="loupe.data.yolo"):
        data = open_dataset("yolo", yolo_root, "train")
    assert isinstance(data, YOLOSegmentation)
    assert data.class_names == ("background", "cat", "dog", "car")
    assert data.ids == ("a", "b")
    assert [p.name for p in data.orphan_labels] == ["orphan.txt"]
    assert "1 label file(s) without an image are ignored: orphan.txt" in caplog.text
    sample = data[0]
    assert sample.image.size == (20, 10)
    assert torch.equal(sample.mask, expected_a())
    assert sample.labels.tolist() == [0, 1, 1, 0]
    assert torch.allclose(sample.boxes, torch.tensor([[2.0, 2, 8, 8], [6, 0, 12, 5]]))
    assert sample.box_labels.tolist() == [1, 2]


def test_yolo_image_without_label_file_has_no_objects(yolo_root) -> None:
    data = open_dataset("yolo", yolo_root, "train", images=False)
    sample = data[1]
    assert not data.has_label_file(1) and sample.image is None
    assert sample.mask.shape == (10, 20) and not sample.mask.any()
    assert not sample.labels.any() and sample.boxes.shape == (0, 4)


def test_yolo_names_option_overrides_yaml(yolo_root) -> None:
    data = open_dataset("yolo", yolo_root, "train", names=["x", "y", "z", "w"])
    assert data.class_names == ("background", "x", "y", "z", "w")
    with pytest.raises(ValueError, match="names must be a list of class names"):
        open_dataset("yolo", yolo_root, "train", names="coco")
    (yolo_root / "data.yaml").unlink()
    with pytest.raises(ValueError, match=r"no class names: pass names=.*data\.yaml not found"):
        open_dataset("yolo", yolo_root, "train")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.1 0.2 0.3 0.4", "expected a class id and at least 3 x y pairs"),
        ("0 0.1 0.2 0.3 0.4 0.5 0.6 0.7", "got 7 coordinates"),
        ("0 0.1 0.2 0.3 abc 0.5 0.6", "not a number"),
        ("1.5 0.1 0.2 0.3 0.4 0.5 0.6", "class id '1.5' is not an integer"),
        ("3 0.1 0.2 0.3 0.4 0.5 0.6", r"class id 3 outside 0\.\.2"),
        ("0 0.1 0.2 1.3 0.4 0.5 0.6", r"normalised to \[0, 1\]"),
    ],
)
def test_yolo_malformed_line_names_file_and_line(yolo_root, line, message) -> None:
    path = yolo_root / "labels" / "train" / "a.txt"
    path.write_text("0 0.1 0.2 0.4 0.2 0.4 0.8\n\n" + line + "\n")
    data = open_dataset("yolo", yolo_root, "train")
    with pytest.raises(ValueError, match=rf"a\.txt:3: .*{message}"):
        data[0]


def test_yolo_missing_folder_and_empty(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"images/val: YOLO image folder not found"):
        open_dataset("yolo", tmp_path, "val", names=NAMES)
    (tmp_path / "images" / "val").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"images/val: empty data set"):
        open_dataset("yolo", tmp_path, "val", names=NAMES)


def test_yolo_unreadable_image(yolo_root) -> None:
    (yolo_root / "images" / "train" / "a.jpg").write_bytes(b"broken")
    data = open_dataset("yolo", yolo_root, "train")
    with pytest.raises(ValueError, match=r"a\.jpg: cannot read image"):
        data[0]
    with pytest.raises(ValueError, match=r"a\.jpg: cannot read image"):
        data.mask(0)  # the masks-only path needs the image size from the header


def test_rasterize_many_classes_uses_wide_mode() -> None:
    mask = rasterize_polygons([(299, [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])], 4, 3)
    assert mask.shape == (3, 4) and mask.unique().tolist() == [300]


@pytest.mark.parametrize(
    "text",
    [
        "names:\n  0: cat\n  1: 'dog'\n  2: car  # comment\nnc: 3\n",
        "names:\n- cat\n- \"dog\"\n- car\n",
        "nc: 3\nnames: [cat, 'dog', car]\n",
    ],
)
def test_read_yaml_names_forms(tmp_path, text) -> None:
    (tmp_path / "d.yaml").write_text(text)
    assert read_yaml_names(tmp_path / "d.yaml") == NAMES


def test_read_yaml_names_errors(tmp_path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("nc: 3\n")
    with pytest.raises(ValueError, match=r"d\.yaml: no 'names:' entry"):
        read_yaml_names(path)
    path.write_text("names:\n  0: a\n  2: b\n")
    with pytest.raises(ValueError, match=r"indices must be 0\.\.1"):
        read_yaml_names(path)
    path.write_text("names: cat\n")
    with pytest.raises(ValueError, match=r"d\.yaml:1: 'names:' must be a list"):
        read_yaml_names(path)
