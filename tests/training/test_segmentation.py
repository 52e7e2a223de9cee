"""Segmentation from pseudo-masks on the synthetic set, ``loupe predict``, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from loupe.cli import main
from loupe.data import SyntheticSplits
from loupe.data.synthetic import SyntheticConfig, make_synthetic
from loupe.io import load_torch, save_image, save_torch
from loupe.masks.palette import save_mask_png
from loupe.metrics.segmentation import confusion_matrix, mean_iou
from loupe.models import Preprocessing, build_classifier, load_model
from loupe.training.segmentation import (
    PseudoMaskDataset,
    SegmentationConfig,
    predict_masks,
    train_segmenter,
)
from loupe.training.transforms import image_tensor

# One object class and no background clutter: a DeepLabV3 trained from scratch for 80 steps
# learns where objects are but not which of 5 classes they are (telling classes, and objects
# from body-like clutter, needs the small badges); measured with 5 classes it still predicts
# all background after 48 steps. On this set it reaches val mIoU 0.606 / 0.618 / 0.584
# (training seeds 0 / 1 / 2) against 0.373 for all background (measured). Precise BatchNorm
# is needed: MobileNetV3's running statistics (momentum 0.01) lag so far behind after a few
# dozen steps that evaluation predicts all background although training-mode predictions
# are good (measured).
SCENES = SyntheticConfig(num_classes=1, clutter=(0, 0))
SPLITS = SyntheticSplits(n_train=64, n_val=16, size=64, seed=0, scenes=SCENES)


def write_pseudo_masks(folder, data) -> None:
    for index in range(len(data)):
        save_mask_png(folder / f"{data.ids[index]}.png", data.masks[index])


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("segmentation")
    train = make_synthetic(SPLITS.n_train, SPLITS.size, SPLITS.seed, SCENES)
    write_pseudo_masks(root / "masks", train)
    config = SegmentationConfig(
        masks=str(root / "masks"), dataset="synthetic", synthetic=SPLITS,
        backbone="mobilenet_v3_large", pretrained="none", epochs=10, batch_size=8, lr=0.1,
        head_lr_mult=1.0, resize_long=None, crop=64, jitter=(0.0, 0.0, 0.0, 0.0),
        precise_bn=4, out=str(root / "run"), progress=False,
    )
    return root, train_segmenter(config), config


@pytest.mark.slow
def test_segmenter_beats_all_background_on_validation_ground_truth(seg_run):
    root, path, _ = seg_run
    history = json.loads((path.parent / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 11))
    val = make_synthetic(SPLITS.n_val, SPLITS.size, SPLITS.seed + 1, SCENES)
    trivial = float(mean_iou(confusion_matrix(torch.zeros_like(val.masks), val.masks, 2)
                             .sum(0)))
    # recompute the validation mIoU from the saved model, independently of the training loop
    model, spec = load_model(path)
    images = Preprocessing.from_json(spec["preprocessing"])(val.images.float() / 255)
    ours = float(mean_iou(confusion_matrix(predict_masks(model, images), val.masks, 2).sum(0)))
    assert ours == pytest.approx(history[-1]["val_miou"], abs=1e-9)
    assert ours > trivial + 0.1, (ours, trivial)


@pytest.mark.slow
def test_segmenter_checkpoint_round_trips(seg_run):
    _, path, _ = seg_run
    model, spec = load_model(path)
    assert spec["kind"] == "segmenter" and spec["model"] == {
        "backbone": "mobilenet_v3_large", "num_classes": 2}
    state = load_torch(path.parent / "checkpoint.pt")
    assert state["epoch"] == 10
    reference, _ = load_model(path)
    reference.load_state_dict(state["model"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], reference(x)["out"])


@pytest.mark.slow
def test_predict_writes_paletted_masks(seg_run, tmp_path, capsys):
    _, path, _ = seg_run
    val = make_synthetic(2, 64, seed=5, config=SCENES)
    for index in range(2):
        save_image(tmp_path / "images" / f"img{index}.png", val[index].image)
    code = main(["predict", "--checkpoint", str(path.parent), str(tmp_path / "images"),
                 "--out", str(tmp_path / "pred"), "--no-progress"])
    assert code == 0
    assert "2 masks in" in capsys.readouterr().out
    model, spec = load_model(path)
    preprocessing = Preprocessing.from_json(spec["preprocessing"])
    for index in range(2):
        with Image.open(tmp_path / "pred" / f"img{index}.png") as png:
            assert png.mode == "P" and png.size == (64, 64)
            written = torch.from_numpy(np.array(png)).long()
        image = preprocessing(image_tensor(val[index].image))[None]
        assert torch.equal(written, predict_masks(model, image)[0])
        assert int(written.max()) < 2


def test_pseudo_mask_errors_name_the_folder_or_file(tmp_path):
    train = make_synthetic(4, 32, seed=0)
    with pytest.raises(FileNotFoundError, match="--masks .*nowhere: folder not found"):
        PseudoMaskDataset(train, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no pseudo-mask for any of the 4 training images"):
        PseudoMaskDataset(train, tmp_path / "empty")
    masks = tmp_path / "masks"
    save_mask_png(masks / f"{train.ids[0]}.png", torch.zeros(16, 16, dtype=torch.long))
    save_mask_png(masks / f"{train.ids[1]}.png", torch.full((32, 32), 9, dtype=torch.long))
    data = PseudoMaskDataset(train, masks)
    assert len(data) == 2  # ids without a mask are skipped (with a warning)
    with pytest.raises(ValueError, match=f"{train.ids[0]}.png: pseudo-mask is 16x16"):
        data[0]
    with pytest.raises(ValueError, match=f"{train.ids[1]}.png: mask has labels \\[9\\]"):
        data[1]


def test_train_seg_cli_errors(tmp_path, capsys):
    code = main(["train-seg", "--masks", str(tmp_path / "none"), "--dataset", "synthetic",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--masks" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--masks is required"):
        train_segmenter(SegmentationConfig(dataset="synthetic"))


def test_predict_cli_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["predict", "--checkpoint", str(tmp_path), str(tmp_path / "empty"), "--out",
                 str(tmp_path / "out")])
    assert code == 2 and "no images found" in capsys.readouterr().err
    for folder in ("a", "b"):
        save_image(tmp_path / folder / "same.png", Image.new("RGB", (8, 8)))
    code = main(["predict", "--checkpoint", str(tmp_path), str(tmp_path / "a"),
                 str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    assert code == 2 and "would both be written as same.png" in capsys.readouterr().err
    code = main(["predict", "--checkpoint", str(tmp_path), str(tmp_path / "a" / "nope.jpg"),
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "nope.jpg: no such file" in capsys.readouterr().err
    # a classifier is not a segmenter
    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "model.json").write_text(json.dumps({
        "kind": "classifier", "model": {"backbone": "small", "num_classes": 2, "head": "auto",
                                        "output_stride": 16},
        "preprocessing": {"mean": [0, 0, 0], "std": [1, 1, 1]}}))
    save_torch(tmp_path / "clf" / "model.pt", build_classifier("small", 2).state_dict())
    code = main(["predict", "--checkpoint", str(tmp_path / "clf"), str(tmp_path / "a"),
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "needs a segmentation model" in capsys.readouterr().err
