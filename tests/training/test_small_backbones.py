"""The small CPU networks: output stride 8 (``small``) and 4 (``small-s4`` and its 1x1-ended
variants), their receptive fields, CAM-exact heads."""

from __future__ import annotations

import pytest
import torch

from loupe.api import explain
from loupe.models import build_classifier


@pytest.mark.parametrize(("backbone", "stride"), [("small", 8), ("small-s4", 4),
                                                   ("small-s4-local", 4), ("small-s4-local2", 4)])
def test_output_stride_and_cam_mean_is_the_logit(backbone, stride):
    torch.manual_seed(0)
    model = build_classifier(backbone, 3).eval()
    images = torch.randn(2, 3, 32, 48)
    features = model.features(images)
    assert features.shape == (2, 128, 32 // stride, 48 // stride)
    targets = torch.tensor([[0, 2], [1, 0]])
    maps = explain(model, images, targets, method="cam", upsample=False)
    with torch.no_grad():
        logits = model(images)
    assert torch.allclose(maps.mean((-2, -1)), logits.gather(1, targets), atol=1e-5)


def test_small_networks_have_no_imagenet_weights():
    with pytest.raises(ValueError, match="backbone 'small-s4' has no ImageNet weights"):
        build_classifier("small-s4", 3, pretrained="imagenet")


# backbone -> (receptive field in pixels, the next smaller one in this list)
FIELDS = {"small": (68, 48), "small-s4": (48, 32), "small-s4-local": (32, 16),
          "small-s4-local2": (16, 8)}


@pytest.mark.parametrize("backbone", list(FIELDS))
def test_receptive_field_of_one_feature_cell(backbone):
    """The input pixels one feature cell depends on span at most the network's receptive field
    and more than the next smaller one (max pooling routes the gradient through one pixel of
    each window, so the span can fall short of the field, never exceed it)."""
    torch.manual_seed(0)
    model = build_classifier(backbone, 3).eval()
    images = torch.randn(1, 3, 96, 96, requires_grad=True)
    features = model.features(images)
    h, w = features.shape[-2:]
    features[0, :, h // 2, w // 2].sum().backward()
    touched = images.grad.abs().sum((0, 1)) > 0
    rows = touched.any(1).nonzero().flatten()
    columns = touched.any(0).nonzero().flatten()
    field, smaller = FIELDS[backbone]
    for span in (rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1):
        assert smaller < span <= field
