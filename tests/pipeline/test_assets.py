"""The pipeline on the shared real data (skipped when /work/shared/assets is absent): the real
VOC 2012 ground truth evaluated in masks-only mode, and Grad-CAM of the real ImageNet
MobileNetV2 on real COCO images through the COCO -> ImageNet class map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from loupe.cli import main
from loupe.data.coco import COCO_CLASSES
from loupe.masks import save_mask_png
from loupe.masks.palette import load_mask_png

from .conftest import read_npz

VOC_IMAGES = 40


def voc_args(assets: Path) -> list[str]:
    voc = assets / "voc"
    return ["--dataset", "voc", "--root", str(voc), "--split-file",
            str(voc / "voc12" / "train.txt"), "--limit", str(VOC_IMAGES), "--no-progress",
            "--bootstrap", "100", "--overlays", "0"]


def test_real_voc_masks_against_themselves_and_a_shifted_copy(assets: Path, tmp_path: Path
                                                              ) -> None:
    voc = assets / "voc"
    ids = (voc / "voc12" / "train.txt").read_text().split()[:VOC_IMAGES]
    shifted = tmp_path / "shifted"
    total = np.zeros((21, 21), dtype=np.int64)
    for sample_id in ids:
        gt = load_mask_png(voc / "SegmentationClassAug" / f"{sample_id}.png")
        pred = torch.roll(gt, shifts=(5, -7), dims=(0, 1))
        pred[pred == 255] = 0  # a prediction has no "ignore"
        save_mask_png(shifted / f"{sample_id}.png", pred)
        keep = gt.numpy() != 255
        total += np.bincount(gt.numpy()[keep] * 21 + pred.numpy()[keep],
                             minlength=441).reshape(21, 21)
    out = tmp_path / "run"
    assert main(["evaluate", *voc_args(assets), "--masks", str(voc / "SegmentationClassAug"),
                 str(shifted), "--names", "truth", "shifted", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["images"] == VOC_IMAGES
    assert results["methods"]["truth"]["miou"] == 1.0
    assert results["methods"]["shifted"]["confusion"] == total.tolist()
    tp = np.diag(total).astype(float)
    union = total.sum(0) + total.sum(1) - tp
    expected = np.nanmean(np.where(union > 0, tp / np.maximum(union, 1), np.nan))
    assert results["methods"]["shifted"]["miou"] == pytest.approx(expected, abs=1e-12)
    (comparison,) = results["comparisons"]
    assert comparison["method"] == "shifted" and comparison["against"] == "truth"
    assert comparison["high"] < 0  # the shifted masks are worse beyond resampling noise


def test_real_classifier_on_real_coco_images(assets: Path, tmp_path: Path) -> None:
    weights = assets / "weights"
    data = ["--dataset", "yolo", "--root", str(assets / "coco128-seg"), "--split", "train2017",
            "--class-names", "coco", "--limit", "6", "--no-progress"]
    maps = tmp_path / "maps"
    assert main(["maps", *data, "--model", "mobilenet_v2", "--weights",
                 str(weights / "mobilenet_v2_imagenet1k_coral.pth"), "--scale", "x*2-1",
                 "--patch", f"{weights / 'tf_same_padding.py'}:tf_same_padding",
                 "--class-map", "coco_to_imagenet", "--size", "224", "--batch-size", "3",
                 "--out", str(maps)]) == 0
    index = {name: i + 1 for i, name in enumerate(COCO_CLASSES)}  # data-set label = id + 1
    zebra = read_npz(maps / "000000000034.npz")
    assert zebra["classes"].tolist() == [index["zebra"]]
    assert int(zebra["predicted"]) == index["zebra"]
    assert int(read_npz(maps / "000000000042.npz")["predicted"]) == index["dog"]
    people = read_npz(maps / "000000000036.npz")  # person has no ImageNet counterpart
    assert people["classes"].tolist() == [index["person"], index["umbrella"]]
    assert np.isneginf(people["scores"][0]) and not people["maps"][0].any()
    assert np.isfinite(people["scores"][1]) and people["maps"][1].any()
    out = tmp_path / "run"
    assert main(["evaluate", *data, "--maps", str(maps), "--out", str(out), "--bootstrap", "0",
                 "--overlays", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    iou = results["methods"]["maps"]["iou"]
    assert iou["zebra"] > 0.5  # Grad-CAM of a confident zebra covers much of the zebra
    # person has no ImageNet counterpart: the class map maps.json records leaves it out of
    # the scores (its map is zero, so counting it would score 0 for a class never asked for)
    assert "person" not in iou and "person" in results["ignored_classes"]
    assert results["class_map"] == "coco_to_imagenet"
    assert results["class_map_from"] == "maps.json"
    assert (out / "overlays.png").is_file()
