"""Targets beyond class logits: model outputs that are not tensors, and the score-function
factories (ClassScore, SegmentationScore, BoxScore) by hand and against pytorch-grad-cam's
target classes on the same outputs."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputTarget,
    FasterRCNNBoxScoreTarget,
    SemanticSegmentationTarget,
)
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

import loupe
from loupe import BoxScore, ClassScore, SegmentationScore, explain
from loupe.targets import TargetError, output_tensor, resolve_targets
from tests.conftest import count_hooks


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.SiLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


Pair = namedtuple("Pair", "logits aux")


class Wrapped(nn.Module):
    """The same network, its logits returned inside a dict, a tuple or a HuggingFace output."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = SmallCNN()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> object:
        logits = self.net(x)
        return {
            "dict": lambda: {"logits": logits, "features": x},
            "tuple": lambda: (logits, logits.detach() * 0),
            "namedtuple": lambda: Pair(logits, None),
            "huggingface": lambda: ImageClassifierOutput(logits=logits),
            "single": lambda: {"scores": logits},
        }[self.kind]()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["dict", "tuple", "namedtuple", "huggingface", "single"])
@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_class_targets_read_logits_out_of_any_output(kind, method, images):
    wrapped = Wrapped(kind)
    layer = {"target_layer": "net.features"} if method == "gradcam" else {}
    expected = explain(wrapped.net, images, [[1, 3], [4, 0]], method=method)
    maps = explain(wrapped, images, [[1, 3], [4, 0]], method=method, **layer)
    torch.testing.assert_close(maps, expected, rtol=0, atol=0)
    top1 = explain(wrapped, images, None, method=method, **layer)
    classes = wrapped.net(images).argmax(1).tolist()
    torch.testing.assert_close(top1, explain(wrapped.net, images, classes, method=method))
    assert count_hooks(wrapped) == 0


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([{"boxes": torch.zeros(0, 4)}], "model output of type list of dict.*BoxScore"),
        ({"a": torch.zeros(2, 3), "b": torch.zeros(2)}, "dict with keys 'a', 'b'"),
        ("text", "of type str"),
    ],
)
def test_outputs_without_a_prediction_tensor(output, message):
    with pytest.raises(TargetError, match=message):
        output_tensor(output)


def test_class_targets_on_segmentation_logits_point_to_segmentation_score():
    targets = resolve_targets([1], 1, torch.device("cpu"))
    with pytest.raises(TargetError, match=r"got \(1, 4, 8, 8\).*SegmentationScore"):
        targets.bind({"out": torch.zeros(1, 4, 8, 8)})


# --- ClassScore -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "saliency", "smoothgrad"])
def test_class_score_equals_class_targets(method, images):
    model = SmallCNN()
    options = {"n_samples": 3, "chunk_size": 4} if method == "smoothgrad" else {}
    expected = explain(model, images, [[2, 0], [4, 1]], method=method, **options)
    maps = explain(model, images, [ClassScore([2, 4]), ClassScore(torch.tensor([0, 1]))],
                   method=method, **options)
    torch.testing.assert_close(maps, expected)


def test_class_score_by_hand():
    logits = torch.tensor([[0.5, -1.0, 2.0], [3.0, 0.0, 1.0]])
    torch.testing.assert_close(ClassScore(2)(logits), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(ClassScore([1, 0])({"logits": logits}), torch.tensor([-1.0, 3.0]))
    peer = torch.stack([ClassifierOutputTarget(c)(row) for c, row in zip([1, 0], logits,
                                                                           strict=True)])
    torch.testing.assert_close(ClassScore([1, 0])(logits), peer)
    with pytest.raises(TargetError, match="label \\[3\\] is out of range for 3 classes"):
        ClassScore(3)(logits)
    with pytest.raises(TargetError, match="ClassScore label gives 3 values for a model output "
                                          "of 2 rows"):
        ClassScore([0, 1, 2])(logits)


# --- SegmentationScore ------------------------------------------------------------------------


def test_segmentation_score_by_hand_and_against_pytorch_grad_cam():
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1:3, 2:] = True
    expected = logits[:, 1, 1:3, 2:].sum((-2, -1))
    torch.testing.assert_close(SegmentationScore(1, mask)({"out": logits}), expected)
    torch.testing.assert_close(SegmentationScore(1, mask.numpy())(logits), expected)
    peer = torch.stack([SemanticSegmentationTarget(1, mask.numpy().astype(np.float32))(row)
                        for row in logits])
    torch.testing.assert_close(SegmentationScore(1, mask)(logits), peer)
    # one mask per image, float weights
    weights = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(SegmentationScore(2, weights)(logits),
                               (logits[:, 2] * weights).sum((-2, -1)))


@pytest.mark.parametrize(
    ("target", "output", "message"),
    [
        (SegmentationScore(1, torch.ones(4, 4)), torch.zeros(2, 3, 4, 5),
         r"mask of shape \(1, 4, 4\) does not fit the output's \(4, 5\) pixels"),
        (SegmentationScore(5, torch.ones(4, 5)), torch.zeros(2, 3, 4, 5),
         r"label \[5\] is out of range for 3 output channels"),
        (SegmentationScore(1, torch.ones(4, 5)), torch.zeros(2, 3),
         r"needs segmentation logits \(B, C, H, W\), got \(2, 3\)"),
        (SegmentationScore(1, torch.ones(3, 4, 5)), torch.zeros(2, 3, 4, 5),
         "SegmentationScore mask gives 3 values for a model output of 2 rows"),
    ],
)
def test_segmentation_score_errors(target, output, message):
    with pytest.raises(TargetError, match=message):
        target(output)


class TinySegmenter(nn.Module):
    """``{"out": (B, 3, H, W)}`` logits of a small conv net, torchvision style."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.SiLU())
        self.classifier = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.backbone(x))
        return {"out": nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear")}


def test_per_image_masks_follow_the_copies_of_sampling_methods(images):
    """SmoothGrad runs noisy copies of both images in mixed chunks; each copy must be scored
    with its own image's mask: the batch equals each image alone, for any chunk size."""
    model = TinySegmenter()
    masks = torch.zeros(2, 12, 12)
    masks[0, :6] = 1
    masks[1, :, 6:] = 1
    options = {"n_samples": 3}
    batch = explain(model, images, SegmentationScore(1, masks), method="smoothgrad",
                    chunk_size=4, **options)
    for i in range(2):
        alone = explain(model, images[i : i + 1], SegmentationScore(1, masks[i]),
                        method="smoothgrad", chunk_size=2, **options)
        torch.testing.assert_close(batch[i : i + 1], alone)
    swapped = explain(model, images, SegmentationScore(1, masks.flip(0)), method="smoothgrad",
                      chunk_size=4, **options)
    assert (swapped - batch).abs().amax() > 1e-2 * batch.abs().amax()


def test_default_layer_of_a_segmentation_model_is_in_its_backbone(images):
    assert loupe.find_target_layer(TinySegmenter(), images) == "backbone"  # not "classifier"


# --- BoxScore ---------------------------------------------------------------------------------


def detections() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]]),
         "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.8])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
         "scores": torch.zeros(0)},
    ]


@pytest.mark.parametrize(
    ("label", "box", "expected"),
    [
        (1, [0.0, 0.0, 10.0, 8.0], 0.8 + 0.9),  # IoU 80/100 with the first box
        (1, [0.0, 0.0, 10.0, 5.0], 0.0),  # IoU exactly 0.5: not above the threshold
        (2, [0.0, 0.0, 10.0, 8.0], 0.0),  # the best overlap has label 1, not 2
        (2, [5.0, 5.0, 15.0, 15.0], 1.0 + 0.8),
    ],
)
def test_box_score_by_hand_and_against_pytorch_grad_cam(label, box, expected):
    found = detections()
    scores = BoxScore(label, box)(found)
    torch.testing.assert_close(scores, torch.tensor([expected, 0.0]))  # image 2: no detection
    peer = FasterRCNNBoxScoreTarget([label], [np.array(box)])
    torch.testing.assert_close(scores, torch.cat([peer(d) for d in found]))


def test_box_score_per_image_boxes_and_errors():
    found = detections()
    scores = BoxScore([2, 1], torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 1.0, 1.0]]))(found)
    torch.testing.assert_close(scores, torch.tensor([1.8, 0.0]))
    with pytest.raises(TargetError, match="BoxScore needs a detection model's output"):
        BoxScore(1, [0, 0, 1, 1])(torch.zeros(2, 5))
    with pytest.raises(TargetError, match="BoxScore box gives 3 values"):
        BoxScore(1, torch.zeros(3, 4))(found)


class FakeDetector(nn.Module):
    """One detection per image whose box grows and whose score rises with a conv feature:
    ``box = (0, 0, 8 + m, 8 + m)``, ``score = sigmoid(m)``, ``m`` the feature's mean."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU())

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        m = self.backbone(x).mean((1, 2, 3))
        return [{"boxes": torch.stack([0 * v, 0 * v, 8 + v, 8 + v])[None],
                 "labels": torch.tensor([1]), "scores": torch.sigmoid(v)[None]} for v in m]


def test_box_score_maps_of_a_fake_detector(images):
    model = FakeDetector()
    with pytest.raises(ValueError, match="FakeDetector returns a list of dicts.*target_layer="):
        explain(model, images, BoxScore(1, [0, 0, 8, 8]), method="gradcam")
    box = torch.tensor([0.0, 0.0, 8.0, 8.0])

    def by_hand(output: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        side = torch.stack([o["boxes"][0, 2] for o in output])  # the box is a square at 0
        iou = torch.minimum(side, box[2]) ** 2 / torch.maximum(side, box[2]) ** 2
        return iou + torch.stack([o["scores"][0] for o in output])

    for method in ("gradcam", "saliency"):
        layer = {"target_layer": "backbone"} if method == "gradcam" else {}
        maps = explain(model, images, BoxScore(1, box), method=method, **layer)
        torch.testing.assert_close(maps, explain(model, images, by_hand, method=method, **layer))
        assert maps.abs().amax() > 0
        # another label: no match, all-zero maps (and no autograd error)
        other = explain(model, images, BoxScore(2, box), method=method, **layer)
        assert torch.count_nonzero(other) == 0


def test_score_functions_must_return_one_score_per_row(images):
    with pytest.raises(TargetError, match=r"one score per row \(B,\), got \(2, 5\)"):
        explain(SmallCNN(), images, lambda out: out, method="saliency")
