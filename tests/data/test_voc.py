"""PASCAL VOC segmentation and VOC XML boxes on tiny data sets in the real layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from loupe.data import VOC_CLASSES, VOCBoxes, VOCSegmentation, collate_samples, open_dataset
from loupe.data.voc import convert_pickled_labels, is_pickled_npy

from .layouts import VOC_MASKS, write_cls_labels, write_image, write_mask, write_voc


def test_voc_classes_in_official_order() -> None:
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background"
    assert VOC_CLASSES[1] == "aeroplane" and VOC_CLASSES[15] == "person"
    assert VOC_CLASSES[20] == "tvmonitor"


@pytest.mark.parametrize("level", ["VOCdevkit", "VOC2012"])
def test_voc_reads_masks_images_and_labels_from_masks(voc_root, level) -> None:
    root = voc_root if level == "VOCdevkit" else voc_root / "VOC2012"
    data = open_dataset("voc", root, "train")
    assert isinstance(data, VOCSegmentation)
    assert data.ids == ("2007_000001", "2007_000002") and len(data) == 2
    assert data.num_classes == 21 and data.class_names == VOC_CLASSES
    sample = data[0]
    assert sample.id == "2007_000001"
    assert isinstance(sample.image, Image.Image) and sample.image.size == (16, 16)
    assert torch.equal(sample.mask, torch.from_numpy(VOC_MASKS["2007_000001"]).long())
    assert sample.labels.nonzero().flatten().tolist() == [1, 15]
    assert sample.boxes is None
    assert data[-1].id == "2007_000002"
    with pytest.raises(IndexError):
        data[2]


def test_voc_ignore_border_not_a_label(voc_root) -> None:
    sample = open_dataset("voc", voc_root, "val")[0]
    assert (sample.mask == 255).sum() == 10
    assert sample.labels.nonzero().flatten().tolist() == [7]


class RunsCode:
    """Unpickling this runs ``Path.touch`` on a marker file: a stand-in for arbitrary code."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_voc_refuses_a_pickled_labels_file_without_running_it(voc_root, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "cls_labels.npy"
    np.save(path, np.array({20070000001: RunsCode(marker)}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cls_labels\.npy: a pickled \.npy; loupe does not "
                       r"unpickle .*--trust-pickle"):
        open_dataset("voc", voc_root, "train", labels_file=path)
    assert not marker.exists()  # on main: np.load(allow_pickle=True) touched it
    # the check reads the header only, also for IRN's real layout
    write_cls_labels(path, {"2007_000001": [3], "2007_000002": [12, 20]})
    assert is_pickled_npy(path) and not is_pickled_npy(tmp_path / "absent.npy")
    np.save(tmp_path / "plain.npy", np.zeros((2, 20), np.float32))
    assert not is_pickled_npy(tmp_path / "plain.npy")
    with pytest.raises(ValueError, match=r"plain\.npy: labels file must be \.json or \.npz"):
        open_dataset("voc", voc_root, "train", labels_file=tmp_path / "plain.npy")


def test_voc_labels_from_the_safe_form_of_cls_labels(voc_root, tmp_path) -> None:
    pickled, safe = tmp_path / "cls_labels.npy", tmp_path / "cls_labels.npz"
    # Deliberately different from the masks, to see that the file is what is read.
    write_cls_labels(pickled, {"2007_000001": [3], "2007_000002": [12, 20], "2008_000003": [7]})
    assert convert_pickled_labels(pickled, safe) == safe
    with np.load(safe, allow_pickle=False) as data:  # no object arrays: loads without pickle
        assert data["ids"].tolist() == ["2007000001", "2007000002", "2008000003"]
        assert data["labels"].dtype == np.float32 and data["labels"].shape == (3, 20)
    data = open_dataset("voc", voc_root, "train", labels_file=safe)
    assert data[0].labels.nonzero().flatten().tolist() == [3]
    assert data[1].labels.nonzero().flatten().tolist() == [12, 20]
    assert data[0].labels.shape == (21,) and data[0].labels.dtype == torch.float32
    # ids written with their underscore match too
    np.savez(safe, ids=np.array(["2007_000001", "2007_000002"]),
             labels=np.eye(2, 20, 4, dtype=np.float32))
    data = open_dataset("voc", voc_root, "train", labels_file=safe)
    assert data[0].labels.nonzero().flatten().tolist() == [5]


def test_voc_labels_file_missing_id(voc_root, tmp_path) -> None:
    path = tmp_path / "cls_labels.npz"
    write_cls_labels(tmp_path / "cls_labels.npy", {"2007_000001": [3]})
    convert_pickled_labels(tmp_path / "cls_labels.npy", path)
    with pytest.raises(ValueError, match=r"cls_labels\.npz: no labels for image '2007_000002'"):
        open_dataset("voc", voc_root, "train", labels_file=path)
    np.savez(path, ids=np.array(["2007_000001"]), labels=np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"labels of '2007_000001' have shape \(3,\)"):
        open_dataset("voc", voc_root, "train", labels_file=path)
    np.savez(path, names=np.array(["2007_000001"]))
    with pytest.raises(ValueError, match=r"not a labels \.npz with arrays 'ids' and 'labels'"):
        open_dataset("voc", voc_root, "train", labels_file=path)


def test_voc_labels_from_json(voc_root, tmp_path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('{"2007_000001": [2], "2007_000002": [5, 6]}')
    data = open_dataset("voc", voc_root, "train", labels_file=path)
    assert data[1].labels.nonzero().flatten().tolist() == [5, 6]
    path.write_text('{"2007_000001": [0], "2007_000002": [5]}')
    with pytest.raises(ValueError, match=r"labels\.json: labels of '2007_000001' must be"):
        open_dataset("voc", voc_root, "train", labels_file=path)


def test_voc_masks_only_without_jpegs(voc_root) -> None:
    voc = voc_root / "VOC2012"
    for path in (voc / "JPEGImages").iterdir():
        path.unlink()
    (voc / "JPEGImages").rmdir()
    with pytest.raises(FileNotFoundError, match="JPEGImages: image folder not found"):
        open_dataset("voc", voc_root, "train")
    data = open_dataset("voc", voc_root, "train", images=False)
    sample = data[1]
    assert sample.image is None and sample.labels.nonzero().flatten().tolist() == [12]
    assert torch.equal(data.mask(1), sample.mask)


def test_voc_augmented_folder_auto_and_explicit(tmp_path) -> None:
    root = write_voc(tmp_path, aug=True)
    aug = root / "VOC2012" / "SegmentationClassAug" / "2007_000002.png"
    write_mask(aug, np.full((16, 16), 9, dtype=np.uint8), mode="L")
    assert open_dataset("voc", root, "train")[1].labels.nonzero().flatten().tolist() == [9]
    plain = open_dataset("voc", root, "train", augmented=False)[1]
    assert plain.labels.nonzero().flatten().tolist() == [12]
    voc_only = tmp_path / "plain"
    write_voc(voc_only)
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug: mask folder not found"):
        open_dataset("voc", voc_only / "VOCdevkit", "train", augmented=True)


def test_voc_split_file_option_train_aug(voc_root, tmp_path) -> None:
    lists = tmp_path / "train_aug.txt"
    lists.write_text("2008_000003\n2007_000001\n")
    data = open_dataset("voc", voc_root, "train_aug", split_file=lists)
    assert data.ids == ("2008_000003", "2007_000001")


def test_voc_missing_split_and_empty_split(voc_root) -> None:
    with pytest.raises(FileNotFoundError, match=r"Segmentation/test\.txt: VOC split file"):
        open_dataset("voc", voc_root, "test")
    with pytest.raises(ValueError, match=r"empty\.txt: empty VOC split file"):
        open_dataset("voc", voc_root, "empty")


def test_voc_not_a_voc_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a VOC folder"):
        open_dataset("voc", tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="VOC root folder not found"):
        open_dataset("voc", tmp_path / "missing", "train")


def test_voc_mask_size_differs_from_image(voc_root) -> None:
    write_image(voc_root / "VOC2012" / "JPEGImages" / "2007_000002.jpg", size=(16, 12))
    data = open_dataset("voc", voc_root, "train")
    with pytest.raises(ValueError, match=r"2007_000002\.jpg: mask of '2007_000002' is 16x16"):
        data[1]
    assert data.mask(1).shape == (16, 16)  # the GT-only accessor does not need the image


def test_voc_mask_with_labels_outside_class_set(voc_root) -> None:
    bad = voc_root / "VOC2012" / "SegmentationClass" / "2007_000001.png"
    write_mask(bad, np.full((16, 16), 30, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"2007_000001\.png: mask has labels \[30\] outside"):
        open_dataset("voc", voc_root, "train")[0]


def test_voc_unreadable_image(voc_root) -> None:
    (voc_root / "VOC2012" / "JPEGImages" / "2007_000001.jpg").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"2007_000001\.jpg: cannot read image"):
        open_dataset("voc", voc_root, "train")[0]


def test_voc_dataloader_with_transform(voc_root) -> None:
    def to_tensor(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255

    data = open_dataset("voc", voc_root, "train", transform=to_tensor)
    batch = next(iter(DataLoader(data, batch_size=2, collate_fn=collate_samples)))
    assert batch.images.shape == (2, 3, 16, 16) and batch.masks.shape == (2, 16, 16)
    assert batch.labels.shape == (2, 21) and batch.ids == ["2007_000001", "2007_000002"]


def test_voc_boxes_from_xml(voc_root) -> None:
    data = open_dataset("voc-boxes", voc_root, "val")
    assert isinstance(data, VOCBoxes) and len(data) == 3
    sample = data[0]
    # VOC 1-based inclusive (1, 1, 8, 8) -> edge coordinates (0, 0, 8, 8).
    assert sample.boxes.tolist() == [[0, 0, 8, 8], [8, 8, 16, 16]]
    assert sample.box_labels.tolist() == [1, 15] and sample.mask is None
    assert sample.labels.nonzero().flatten().tolist() == [1, 15]
    no_difficult = open_dataset("voc-boxes", voc_root, "val", difficult=False)[0]
    assert no_difficult.box_labels.tolist() == [1]


def test_voc_boxes_errors(voc_root) -> None:
    xml = voc_root / "VOC2012" / "Annotations" / "2007_000002.xml"
    xml.write_text("<annotation><object><name>dog</name></object></annotation>")
    data = open_dataset("voc-boxes", voc_root, "val", images=False)
    with pytest.raises(ValueError, match=r"2007_000002\.xml: object 1 has no valid <bndbox>"):
        data[1]
    xml.write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"2007_000002\.xml: malformed XML"):
        data[1]
    xml.write_text(
        "<annotation><object><name>unicorn</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>"
    )
    with pytest.raises(ValueError, match=r"2007_000002\.xml: unknown class 'unicorn'"):
        data[1]
