"""``loupe explain --model`` with torchvision segmentation and detection models (issue 12 section
2): ``--target`` names the class (and ``CLASS:N`` the box), maps checked against
pytorch-grad-cam's targets on the same randomly initialised models (nothing downloaded)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from pytorch_grad_cam.utils.model_targets import (
    FasterRCNNBoxScoreTarget,
    SemanticSegmentationTarget,
)

from loupe.io import load_npz, read_json
from tests.cli.conftest import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    assert_error,
    raw_maps,
    run_cli,
    write_image,
)
from tests.methods.test_model_targets import Logits, grad_cam_maps

LOOSE = """\
def loose(model):  # random weights score every box below torchvision's 0.05
    model.roi_heads.score_thresh = 0.0
    model.roi_heads.detections_per_img = 4
    model.rpn._pre_nms_top_n["testing"] = 40
    model.rpn._post_nms_top_n["testing"] = 20
"""


def random_dense(name: str, num_classes: int) -> torch.nn.Module:
    """The model ``--weights random --seed 0`` builds, made here with torchvision alone."""
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                        num_classes=num_classes).eval()


def assert_same_maps(data: dict[str, np.ndarray], peer: torch.Tensor) -> None:
    """Our stored map (float16 times its peak, at the input's size) against pytorch-grad-cam's
    raw map at the layer's resolution, upsampled the same way."""
    ours = raw_maps(data)[0]
    up = F.interpolate(peer[None, None], size=ours.shape, mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    scale = float(np.abs(up).max())
    if scale == 0:  # random weights can leave a detection no gradient (torchvision 0.29.1)
        assert not ours.any()
        return
    np.testing.assert_allclose(ours, up, rtol=2e-3, atol=2e-3 * scale)


def test_segmentation_model_explains_its_largest_classes(tmp_path, capsys):
    image = write_image(tmp_path / "scene.png", 96, 64, 11)  # at --resize 64: seen unchanged
    out = tmp_path / "out"
    code, stdout, _ = run_cli([
        "explain", str(image), "--model", "lraspp_mobilenet_v3_large", "--weights", "random",
        "--resize", "64", "--topk", "2", "--device", "cpu", "--out", str(out)], capsys)
    assert code == 0
    record = read_json(out / "explain.json")
    assert record["settings"]["task"] == "segmentation"
    model = random_dense("lraspp_mobilenet_v3_large", 21)
    with Image.open(image) as picture:
        x = TF.normalize(TF.to_tensor(picture.convert("RGB")), IMAGENET_MEAN, IMAGENET_STD)[None]
    with torch.no_grad():
        logits = model(x)["out"][0]
    predicted = logits.argmax(0)
    names = record["images"]["scene"]["outputs"]
    areas = torch.bincount(predicted.flatten(), minlength=21)
    expected = [c for c in areas.argsort(descending=True).tolist() if c != 0 and areas[c] > 0]
    assert [record["outputs"][n]["class"] for n in names] == expected[:2]
    for name in names:
        entry = record["outputs"][name]
        cls, mask = entry["class"], (predicted == entry["class"]).float()
        assert entry["region"] == "predicted pixels"
        assert entry["score"] == torch.softmax(logits, 0)[cls][mask > 0].mean().item()
        assert f"{entry['name']} ({cls}) {entry['score']:.3f}" in stdout  # VOC names, offline
        peer = grad_cam_maps(Logits(model, lambda output: output["out"]),
                             model.get_submodule(entry["target_layer"]), x,
                             [SemanticSegmentationTarget(cls, mask.numpy())])
        assert_same_maps(load_npz(out / f"{name}.npz"), peer[0])


def test_detection_model_explains_boxes_by_class_and_index(tmp_path, capsys):
    image = write_image(tmp_path / "street.png", 96, 64, 12)  # 64x96: multiples of 32
    (tmp_path / "loose.py").write_text(LOOSE)
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", "fasterrcnn_mobilenet_v3_large_320_fpn",
            "--weights", "random", "--resize", "64", "--patch", f"{tmp_path / 'loose.py'}:loose",
            "--device", "cpu", "--out", str(out)]
    assert run_cli(args + ["--topk", "2"], capsys)[0] == 0
    model = random_dense("fasterrcnn_mobilenet_v3_large_320_fpn", 91)
    model.roi_heads.score_thresh, model.roi_heads.detections_per_img = 0.0, 4
    model.rpn._pre_nms_top_n["testing"], model.rpn._post_nms_top_n["testing"] = 40, 20
    model.transform.min_size = (64,)  # what --resize 64 sets
    with Image.open(image) as picture:
        x = TF.to_tensor(picture.convert("RGB"))[None]  # the detector normalises inside
    with torch.no_grad():
        (found,) = model(x)
    labels = found["labels"].tolist()
    record = read_json(out / "explain.json")
    names = record["images"]["street"]["outputs"]
    assert len(names) == 2
    for i, name in enumerate(names):  # the two best detections
        entry, data = record["outputs"][name], load_npz(out / f"{name}.npz")
        assert name == f"street.gradcam.{labels[i]}.box{labels[:i].count(labels[i])}"
        np.testing.assert_allclose(data["boxes"][0], found["boxes"][i].numpy(), rtol=1e-5)
        assert data["classes"].tolist() == [labels[i]]
        assert entry["target_layer"] == "backbone.body.16"
        peer = grad_cam_maps(model, model.get_submodule(entry["target_layer"]), x,
                             [FasterRCNNBoxScoreTarget([labels[i]], [found["boxes"][i].numpy()])])
        assert_same_maps(data, peer[0])
    # --target CLASS:N names the class's N-th best box; a missing one is a warning
    wanted = labels[0]
    second = [i for i, label in enumerate(labels) if label == wanted][1]
    code, stdout, _ = run_cli(args + ["--target", f"{wanted}:1", f"{wanted}:9"], capsys)
    assert code == 0 and f"box 1 {float(found['scores'][second]):.3f}" in stdout
    data = load_npz(out / f"street.gradcam.{wanted}.box1.npz")
    np.testing.assert_allclose(data["boxes"][0], found["boxes"][second].numpy(), rtol=1e-5)
    assert not list(out.glob(f"street.gradcam.{wanted}.box9.*"))


def test_dense_model_errors_name_the_option(tmp_path, capsys):
    image = write_image(tmp_path / "a.png", 64, 64, 1)
    base = ["explain", str(image), "--weights", "random", "--resize", "64", "--device", "cpu",
            "--out", str(tmp_path / "out")]
    assert_error(capsys, base + ["--model", "fasterrcnn_mobilenet_v3_large_320_fpn",
                                 "--target", "dog:x"], "--target 'dog:x'", "box index")
    assert_error(capsys, base + ["--model", "lraspp_mobilenet_v3_large", "--target", "zebra"],
                 "--target 'zebra' is not a class name")
    assert_error(capsys, base + ["--model", "lraspp_mobilenet_v3_large", "--weights", "NOPE"],
                 "--weights 'NOPE' is neither a file nor a weight name for lraspp")
