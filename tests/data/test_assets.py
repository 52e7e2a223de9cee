"""The readers on the real files in the shared assets (skipped when they are absent)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from loupe.data import COCO_CLASSES, open_dataset, read_index_mask
from loupe.data.voc import convert_pickled_labels, load_image_labels
from loupe.data.yolo import read_yolo_label_file


@pytest.fixture(scope="module")
def safe_cls_labels(assets, tmp_path_factory) -> Path:
    """IRN's real (pickled) cls_labels.npy converted to its safe .npz (a trusted file)."""
    return convert_pickled_labels(assets / "voc" / "voc12" / "cls_labels.npy",
                                  tmp_path_factory.mktemp("labels") / "cls_labels.npz")


def test_voc_train_masks_only_and_cls_labels_agree(assets, safe_cls_labels) -> None:
    """All 1,464 real train masks read without JPEGs; the labels of IRN's cls_labels.npy equal
    the classes in the masks except for one image, whose XML-derived label has a tvmonitor that
    is not in its mask."""
    voc = assets / "voc"
    data = open_dataset("voc", voc, "train", images=False, split_file=voc / "voc12" / "train.txt")
    assert len(data) == 1464 and data.mask_dir.name == "SegmentationClassAug"
    file_labels = load_image_labels(safe_cls_labels, data.ids, 21)
    differ = {}
    for index in range(len(data)):
        sample = data[index]
        assert sample.image is None and sample.mask.dim() == 2
        assert 100 <= min(sample.mask.shape) and max(sample.mask.shape) <= 500
        assert sample.labels.any()  # every train image has an object
        if not torch.equal(sample.labels, file_labels[index]):
            differ[sample.id] = (file_labels[index] - sample.labels).nonzero().flatten().tolist()
    assert differ == {"2011_001621": [20]}
    with_file = open_dataset("voc", voc, "train", images=False,
                             split_file=voc / "voc12" / "train.txt",
                             labels_file=safe_cls_labels)
    assert torch.equal(with_file[0].labels, file_labels[0])
    assert with_file[0].labels.nonzero().flatten().tolist() == [1, 15]  # 2007_000032


def test_voc_val_and_train_aug_lists(assets, safe_cls_labels) -> None:
    voc = assets / "voc"
    val = open_dataset("voc", voc, "val", images=False, split_file=voc / "voc12" / "val.txt")
    assert len(val) == 1449
    assert all((val.mask_dir / f"{i}.png").is_file() for i in val.ids)
    aug = open_dataset("voc", voc, "train_aug", images=False,
                       split_file=voc / "voc12" / "train_aug.txt",
                       labels_file=safe_cls_labels)
    assert len(aug) == 10582


def test_voc_colour_coded_target_is_rejected(assets) -> None:
    path = assets / "voc" / "samples" / "1_target.png"
    with pytest.raises(ValueError, match=r"1_target\.png: mask has mode 'RGB'"):
        read_index_mask(path, 21)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_yolo_coco128_seg(assets, caplog) -> None:
    from pycocotools import mask as mask_utils

    root = assets / "coco128-seg"
    with caplog.at_level(logging.WARNING, logger="loupe.data.yolo"):
        data = open_dataset("yolo", root, "train2017", names=COCO_CLASSES)
    assert "2 label file(s) without an image" in caplog.text
    assert [p.stem for p in data.orphan_labels] == ["000000000656", "000000000659"]
    assert len(data) == 128 and data.num_classes == 81
    with_labels = [i for i in range(len(data)) if data.has_label_file(i)]
    assert len(with_labels) == 126
    seen = torch.zeros(81)
    agree = total = 0
    for index in range(len(data)):
        sample = data[index]  # also checks mask size == image size
        height, width = sample.image.height, sample.image.width
        mask = sample.mask.numpy()  # test-side checks in NumPy: cheap on a loaded machine
        assert mask.shape == (height, width) and sample.mask.dtype == torch.long
        in_mask = np.bincount(mask.ravel(), minlength=81)
        assert in_mask.size == 81  # labels within 0..80
        assert not ((in_mask[1:] > 0) & (sample.labels[1:] == 0).numpy()).any()
        seen += sample.labels
        if index not in with_labels:
            assert sample.id in ("000000000250", "000000000508")
            assert not sample.mask.any() and not sample.labels.any()
            continue
        # Independent rasterisation with pycocotools, same painting order.
        reference = np.zeros((height, width), dtype=np.int64)
        for class_id, points in read_yolo_label_file(data.label_path(index), 80):
            polygon = [c for x, y in points for c in (x * width, y * height)]
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
            reference[mask_utils.decode(rle).astype(bool)] = class_id + 1
        agree += int((reference == mask).sum())
        total += reference.size
    assert int((seen > 0).sum()) == 71  # README: 71 of the 80 classes occur
    # PIL fills outline pixels, pycocotools does not: they differ only along boundaries.
    assert agree / total > 0.99


def test_cub_wsol_metadata(assets) -> None:
    data = open_dataset("wsol", assets / "wsol" / "CUB", images=False)
    assert len(data) == 5794 and data.num_classes == 200
    assert data.class_names[0] == "001.Black_footed_Albatross"
    assert data.class_names[199] == "200.Common_Yellowthroat"
    counts = torch.zeros(200)
    for index in range(len(data)):
        sample = data[index]
        width, height = data.image_size_of(index)
        assert sample.boxes.shape == (1, 4)
        x0, y0, x1, y1 = sample.boxes[0].tolist()
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert sample.box_labels.tolist() == [int(sample.labels.argmax())]
        counts += sample.labels
    assert int(counts.sum()) == 5794 and int(counts.min()) >= 11 and int(counts.max()) <= 30
