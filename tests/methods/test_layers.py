"""Target layer and CAM head discovery on torchvision architectures, ViT reshape, layer errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from loupe import explain, find_target_layer
from loupe.hooks import hooked
from loupe.layers import LayerError, find_module
from loupe.methods.heads import HeadError, find_cam_head
from tests.conftest import count_hooks


def calibrated(model: nn.Module, size: int = 64) -> nn.Module:
    """Random-weight ``model`` with BatchNorm statistics taken from a seeded random batch and
    random classifier biases / LayerNorm affines: well-scaled logits (untouched, MobileNetV2 and
    EfficientNet give logits ~1e-10) and no bias that is trivially zero."""
    generator = torch.Generator().manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size, generator=generator))
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.3)
            if isinstance(module, nn.LayerNorm) and module.weight is not None:
                module.weight.copy_(1 + torch.randn(module.weight.shape, generator=generator) * 0.3)
    return model.eval()


class VGGGAP(nn.Module):
    """VGG-GAP (Zhou et al.'s CAM network): conv features -> GAP -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 20))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# name -> (builder, target layer, CAM head, pools ReLU(A), LayerNorm)
ARCHITECTURES = {
    "resnet18": (tvm.resnet18, "layer4", "fc", False, None),
    "vgg_gap": (VGGGAP, "features", "classifier.2", False, None),
    # DenseNet's forward applies F.relu in place on `features`: the captured activation is
    # already rectified, so the plain GAP head reproduces the logits.
    "densenet121": (tvm.densenet121, "features", "classifier", False, None),
    "mobilenet_v2": (tvm.mobilenet_v2, "features", "classifier.1", False, None),
    "efficientnet_b0": (tvm.efficientnet_b0, "features", "classifier.1", False, None),
    "convnext_tiny": (tvm.convnext_tiny, "features", "classifier.2", False, "classifier.0"),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    builder = ARCHITECTURES[name][0]
    model = builder() if name == "vgg_gap" else builder(weights=None)
    return calibrated(model)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_target_layer_and_cam_head_are_found(name):
    _, layer, head_name, relu, norm = ARCHITECTURES[name]
    model = build(name)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert find_target_layer(model, x) == layer
    with hooked(model, [layer]) as captured, torch.no_grad():
        logits = model(x)
        head = find_cam_head(model, captured[layer], logits, layer=layer)
    assert (head.name, head.relu, head.norm_name) == (head_name, relu, norm)
    assert logits.abs().amax() > 0.1  # a real check, not 0 == 0
    classes = torch.tensor([[1, 2, 7]])
    maps = explain(model, x, classes, method="cam", upsample=False)
    assert maps.shape == (1, 3, *captured[layer].shape[-2:])
    expected = logits.gather(1, classes) - head.constant[classes]
    torch.testing.assert_close(maps.mean((-2, -1)), expected, rtol=1e-4, atol=1e-5)
    assert count_hooks(model) == 0


def test_densenet_cam_uses_the_rectified_features():
    model = build("densenet121")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    maps = explain(model, x, [[0, 5]], method="cam", upsample=False)
    with torch.no_grad():
        features = model.features(x)
    assert (features < 0).any()
    expected = torch.einsum(
        "kc,chw->khw", model.classifier.weight[[0, 5]], features[0].clamp(min=0)
    )
    torch.testing.assert_close(maps[0], expected, rtol=1e-4, atol=1e-5)


def test_gradcam_on_densenet():
    """DenseNet applies F.relu(inplace=True) after the captured layer: the hook must hand the
    model a copy, not the leaf it differentiates against."""
    model = tvm.densenet121(weights=None)
    x = torch.randn(1, 3, 64, 64)
    maps = explain(model, x, [[0, 5]], method="gradcam", target_layer="features")
    assert maps.shape == (1, 2, 64, 64)
    assert torch.isfinite(maps).all()


def test_mobilenet_v3_has_no_cam_head():
    """MobileNetV3's classifier is Linear -> Hardswish -> Dropout -> Linear: target layer found,
    CAM refused with the reason."""
    torch.manual_seed(0)
    model = calibrated(tvm.mobilenet_v3_small(weights=None))
    x = torch.randn(1, 3, 64, 64)
    assert find_target_layer(model, x) == "features"
    with pytest.raises(HeadError, match="reads 1024 features but target layer 'features' has "
                       "576 channels; Hardswish 'classifier.1' sits between"):
        explain(model, x, 3, method="cam")
    assert explain(model, x, 3, method="gradcam").shape == (1, 1, 64, 64)


def test_vgg16_hidden_classifier_has_no_cam_head():
    torch.manual_seed(0)
    model = tvm.vgg16(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(HeadError, match=r"^CAM needs a global-pooling \+ linear head: "
                       r"VGG's final linear layer 'classifier.6' reads 4096 features"):
        explain(model, x, 3, method="cam", target_layer="features")
    assert count_hooks(model) == 0


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    """torchvision's ViT-B/16 layout (224 pixels, 16-pixel patches: a 14x14 token grid, 12
    encoder layers) at a 64-wide embedding instead of 768: the same modules and token grid,
    a fraction of the arithmetic."""
    torch.manual_seed(0)
    model = tvm.VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=4,
                                  hidden_dim=64, mlp_dim=128).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises it
    return model


@pytest.mark.slow
def test_vit_gradcam_uses_the_token_grid(vit):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    layer = find_target_layer(vit, x)
    assert layer == "encoder.layers.encoder_layer_11.ln_1"
    maps = explain(vit, x, [[1, 2]], method="gradcam", target_layer=layer)
    assert maps.shape == (1, 2, 224, 224) and torch.isfinite(maps).all()
    # against pytorch-grad-cam with its documented ViT reshape (class token dropped), for the
    # first target only
    import pytorch_grad_cam.base_cam as base_cam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:, :].reshape(tokens.shape[0], 14, 14, -1).permute(0, 3, 1, 2)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
        with GradCAM(vit, [vit.get_submodule(layer)], reshape_transform=reshape) as cam:
            peer = torch.from_numpy(np.asarray(cam(x, [ClassifierOutputTarget(1)])))[:, None]
    vit.zero_grad(set_to_none=True)
    assert peer.shape == (1, 1, 14, 14)  # the grid of the 196 patch tokens
    assert peer.amax() > 0 and (peer > 0).float().mean() < 1
    # explain's own upsampling applied to the peer's 14x14 maps
    peer = F.interpolate(peer, size=(224, 224), mode="bilinear", align_corners=False)
    assert (maps[:, :1] - peer).abs().amax() <= 1e-4 * peer.abs().amax()
    assert (maps[:, 1:] - peer).abs().amax() > 1e-2 * peer.abs().amax()  # class 2 differs
    assert count_hooks(vit) == 0


def test_cam_on_vit_is_refused(vit):
    x = torch.randn(1, 3, 224, 224)
    with pytest.raises(HeadError, match="does not reproduce VisionTransformer's logits"):
        explain(vit, x, 1, method="cam")


def test_unknown_layer_names_close_matches():
    model = tvm.resnet18(weights=None)
    with pytest.raises(LayerError, match=r"layer 'layer5' does not exist in ResNet; did you "
                       r"mean 'layer4', 'layer3', 'layer2', 'layer1'"):
        explain(model, torch.randn(1, 3, 32, 32), 0, method="gradcam", target_layer="layer5")
    with pytest.raises(LayerError, match="'layer4.1.conv1'"):
        find_module(model, "layer4.1.conv")
    assert count_hooks(model) == 0


class Attention(nn.Module):
    """timm-style attention with a ``k_norm`` that sees ``(B, heads, N, d)`` tensors."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.k_norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        k = self.k_norm(k)
        attention = (q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5).softmax(-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding, class token, two blocks, head on the class token (timm's layout)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def test_attention_internals_are_not_taken_for_a_feature_map():
    """The 4D ``(B, heads, N, d)`` output of ``k_norm`` must not win over the token layers."""
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(2, 3, 32, 32)
    assert find_target_layer(model, x) == "blocks.1.norm1"
    raw = explain(model, x, [[0, 3], [1, 2]], method="gradcam", upsample=False)
    assert raw.shape == (2, 2, 8, 8)  # 64 patch tokens; the class token dropped
    assert (raw > 0).any()
