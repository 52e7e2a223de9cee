"""Grad-CAM on models that are not plain classifiers, against pytorch-grad-cam with its targets
and reshapes on the same models: torchvision DeepLabV3 (SemanticSegmentationTarget), Faster
R-CNN (FasterRCNNBoxScoreTarget), a HuggingFace ViT and a timm Swin (random weights, small
inputs, nothing downloaded). Maps are compared at the layer's resolution before any scaling,
as in test_cam_family.py."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputTarget,
    FasterRCNNBoxScoreTarget,
    SemanticSegmentationTarget,
)
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.segmentation import deeplabv3_resnet50, fcn_resnet50
from transformers import ViTConfig, ViTForImageClassification

from loupe import BoxScore, SegmentationScore, explain, find_target_layer
from loupe.layers import channels_last_to_grid
from tests.conftest import count_hooks
from tests.methods.test_cam_family import assert_agree


def grad_cam_maps(model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: list,
                  reshape=None) -> torch.Tensor:
    """pytorch-grad-cam's Grad-CAM ``(B, h, w)`` without its min-max scaling and resizing."""
    import pytorch_grad_cam.base_cam as base_cam

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
        with GradCAM(model, [layer], reshape_transform=reshape) as cam:
            out = cam(images, targets)
    model.zero_grad(set_to_none=True)
    return torch.from_numpy(np.asarray(out, dtype=np.float32))


class Logits(nn.Module):
    """What pytorch-grad-cam needs: a model that returns a tensor."""

    def __init__(self, model: nn.Module, read) -> None:
        super().__init__()
        self.model = model
        self.read = read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read(self.model(x))


def test_deeplabv3_segmentation_score_matches_pytorch_grad_cam():
    torch.manual_seed(0)
    model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=4).eval()
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    assert find_target_layer(model, images) == "backbone.layer4"
    with torch.no_grad():
        predicted = model(images)["out"].argmax(1)
    masks = [(predicted[0] == 1).float(), (predicted[0] == 2).float()]  # one image's masks
    assert all(0 < m.sum() < m.numel() for m in masks)
    targets = [SegmentationScore(1, masks[0]), SegmentationScore(2, masks[1])]
    ours = explain(model, images, targets, method="gradcam", upsample=False)
    peer = torch.stack([
        grad_cam_maps(Logits(model, lambda out: out["out"]), model.backbone.layer4, images,
                      [SemanticSegmentationTarget(c, m.numpy())] * 2)
        for c, m in ((1, masks[0]), (2, masks[1]))
    ], dim=1)
    assert_agree(ours, peer)
    assert count_hooks(model) == 0


def test_fcn_default_layer_is_its_backbone():
    torch.manual_seed(0)
    model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=3).eval()
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert find_target_layer(model, images) == "backbone.layer4"
    maps = explain(model, images, SegmentationScore(1, torch.ones(32, 32)), method="gradcam")
    assert maps.shape == (1, 1, 32, 32) and maps.abs().amax() > 0


def test_faster_rcnn_box_score_matches_pytorch_grad_cam():
    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=96, max_size=96,
        box_score_thresh=0.0, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
        box_detections_per_img=10,
    ).eval()
    images = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (found,) = model(images)
    picks = [0, 3]  # two detections of the first forward, explained one map each
    targets = [BoxScore(int(found["labels"][i]), found["boxes"][i]) for i in picks]
    ours = explain(model, images, targets, method="gradcam",
                   target_layer="backbone.body.layer4", upsample=False)
    peer = torch.stack([
        grad_cam_maps(model, model.backbone.body.layer4, images, [FasterRCNNBoxScoreTarget(
            [found["labels"][i]], [found["boxes"][i].numpy()])])
        for i in picks
    ], dim=1)
    assert_agree(ours, peer)
    assert (ours[:, 0] - ours[:, 1]).abs().amax() > 1e-2 * ours.abs().amax()
    assert count_hooks(model) == 0


def test_huggingface_vit_gradcam_matches_pytorch_grad_cam():
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=5)
    model = ViTForImageClassification(config).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layer = find_target_layer(model, images)
    assert layer.endswith("1.layernorm_before")  # the first norm of the last block
    ours = explain(model, images, [[1, 3], [4, 0]], method="gradcam", upsample=False)

    def vit_reshape(tokens: torch.Tensor) -> torch.Tensor:  # pytorch-grad-cam's, 4x4 patches
        return tokens[:, 1:].reshape(tokens.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    peer = torch.stack([
        grad_cam_maps(Logits(model, lambda out: out.logits), model.get_submodule(layer), images,
                      [ClassifierOutputTarget(c) for c in column], reshape=vit_reshape)
        for column in ([1, 4], [3, 0])
    ], dim=1)
    assert_agree(ours, peer)


def test_timm_swin_gradcam_matches_pytorch_grad_cam():
    torch.manual_seed(0)
    model = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, img_size=96, window_size=3,
        embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), num_classes=5,
    ).eval()
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    assert find_target_layer(model, images) == "norm"  # (B, 3, 3, C), channels last
    ours = explain(model, images, [[1, 3], [4, 0]], method="gradcam", upsample=False)
    assert ours.shape == (2, 2, 3, 3)
    peer = torch.stack([
        grad_cam_maps(model, model.norm, images, [ClassifierOutputTarget(c) for c in column],
                      reshape=lambda t: t.permute(0, 3, 1, 2))
        for column in ([1, 4], [3, 0])
    ], dim=1)
    assert_agree(ours, peer)
    # a block's norm2 holds (B, N, C) tokens: the same reshape reads them as a grid
    tokens = explain(model, images, 1, method="gradcam", upsample=False,
                     target_layer="layers.3.blocks.0.norm2", reshape=channels_last_to_grid)
    assert tokens.shape == (2, 1, 3, 3) and tokens.abs().amax() > 0
