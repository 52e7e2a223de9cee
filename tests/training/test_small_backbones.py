"""The small CPU networks: output stride 8 (``small``) and 4 (``small-s4``), CAM-exact heads."""

from __future__ import annotations

import pytest
import torch

from loupe.api import explain
from loupe.models import build_classifier


@pytest.mark.parametrize(("backbone", "stride"), [("small", 8), ("small-s4", 4)])
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
