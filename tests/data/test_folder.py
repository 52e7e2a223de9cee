"""The generic images/ + masks/ folder layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loupe.data import FolderSegmentation, open_dataset

from .layouts import block_mask, write_image, write_mask

MASKS = {
    "one": block_mask([(1, 0, 8, 0, 8)]),
    "two": block_mask([(2, 0, 16, 8, 16), (255, 0, 16, 7, 8)]),
    "three": block_mask([]),
}


@pytest.fixture
def folder_root(tmp_path):
    for seed, (stem, mask) in enumerate(MASKS.items()):
        suffix = ".png" if stem == "two" else ".jpg"
        write_image(tmp_path / "images" / f"{stem}{suffix}", seed=seed)
        write_mask(tmp_path / "masks" / f"{stem}.png", mask, mode="P" if seed % 2 else "L")
    (tmp_path / "class_names.txt").write_text("background\nball\nbox\n")
    return tmp_path


def test_folder_reads_images_masks_and_names(folder_root) -> None:
    data = open_dataset("folder", folder_root)
    assert isinstance(data, FolderSegmentation)
    assert data.ids == ("one", "three", "two")  # sorted stems, any image suffix
    assert data.class_names == ("background", "ball", "box")
    sample = data[2]
    assert sample.image.size == (16, 16) and sample.image.mode == "RGB"
    assert torch.equal(sample.mask, torch.from_numpy(MASKS["two"]).long())
    assert sample.labels.tolist() == [0, 0, 1]
    assert data[1].labels.tolist() == [0, 0, 0]


def test_folder_labels_file_and_names_options(folder_root) -> None:
    (folder_root / "labels.json").write_text(json.dumps({"one": [2], "two": [1], "three": []}))
    data = open_dataset("folder", folder_root)
    assert data[0].labels.tolist() == [0, 0, 1]  # from the file, not the mask
    named = open_dataset("folder", folder_root, class_names=["bg", "a", "b", "c"])
    assert named.num_classes == 4
    (folder_root / "class_names.txt").unlink()
    assert open_dataset("folder", folder_root, num_classes=3).class_names[2] == "class_2"
    with pytest.raises(ValueError, match="no class set: add class_names.txt"):
        open_dataset("folder", folder_root)


def test_folder_without_masks_needs_labels(folder_root) -> None:
    for path in (folder_root / "masks").iterdir():
        path.unlink()
    (folder_root / "masks").rmdir()
    with pytest.raises(FileNotFoundError, match="masks: mask folder not found and no labels"):
        open_dataset("folder", folder_root)
    (folder_root / "labels.json").write_text(json.dumps({"one": [2], "two": [1], "three": []}))
    sample = open_dataset("folder", folder_root)[0]
    assert sample.mask is None and sample.labels.tolist() == [0, 0, 1]


def test_folder_splits_by_list_file_and_subfolder(folder_root, tmp_path) -> None:
    (folder_root / "val.txt").write_text("two\none\n")
    assert open_dataset("folder", folder_root, "val").ids == ("two", "one")
    other = tmp_path / "sub"
    write_image(other / "images" / "train" / "x.jpg")
    write_mask(other / "masks" / "train" / "x.png", MASKS["one"])
    data = open_dataset("folder", other, "train", num_classes=2)
    assert data.ids == ("x",) and data[0].labels.tolist() == [0, 1]
    with pytest.raises(FileNotFoundError, match=r"test\.txt: split file for 'test' not found"):
        open_dataset("folder", folder_root, "test")
    (folder_root / "bad.txt").write_text("two\nmissing\n")
    with pytest.raises(FileNotFoundError, match=r"no image for ids of split 'bad'"):
        open_dataset("folder", folder_root, "bad")


def test_folder_errors(folder_root, tmp_path) -> None:
    write_mask(folder_root / "masks" / "one.png", np.full((16, 16), 3, dtype=np.uint8))
    data = open_dataset("folder", folder_root)
    with pytest.raises(ValueError, match=r"one\.png: mask has labels \[3\] outside .*0\.\.2"):
        data[0]
    write_mask(folder_root / "masks" / "two.png", np.zeros((8, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"two\.png: mask of 'two' is 16x8 .* image is 16x16"):
        data[2]
    (folder_root / "images" / "three.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"three\.jpg: cannot read image"):
        data[1]
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty data set"):
        open_dataset("folder", tmp_path / "empty", num_classes=2)
    with pytest.raises(FileNotFoundError, match="images: image folder not found"):
        open_dataset("folder", tmp_path / "nothing", num_classes=2)
    write_image(folder_root / "images" / "one.png")
    with pytest.raises(ValueError, match="two images with the stem 'one'"):
        open_dataset("folder", folder_root)
