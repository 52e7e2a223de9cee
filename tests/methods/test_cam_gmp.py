"""CAM of global-max-pooling heads (the CAM paper's GAP-versus-GMP comparison): the head is
found and checked on the forward, and the maps are still ``W · A`` exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from loupe import explain
from loupe.hooks import hooked
from loupe.methods.heads import HeadError, find_cam_head
from tests.conftest import count_hooks
from tests.methods.test_cam import TinyGAP, fitted_factor, randomised


def gmp(model: TinyGAP) -> TinyGAP:
    model.pool = nn.AdaptiveMaxPool2d(1)
    return model


def hand_model() -> TinyGAP:
    model = gmp(TinyGAP())
    with torch.no_grad():
        model.features[0].weight.copy_(torch.eye(2)[:, :, None, None])
        model.fc.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]]))
        model.fc.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return model.eval()


def test_gmp_cam_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 5.0], [-1.0, 2.0]]]])
    model = hand_model()
    with torch.no_grad():
        logits = model(x)
    # GMP: channel maxima 4 and 5, so logits = W (4, 5) + b
    torch.testing.assert_close(logits, torch.tensor([[14.5, -6.0, 19.0]]))
    maps = explain(model, x, [[0, 2, -1]], method="cam", upsample=False)
    # CAM_0 = x0 + 2 x1 and CAM_2 = 3 x0 + x1, as with GAP; padding -> 0
    expected = torch.tensor([[[[1.0, 12.0], [1.0, 8.0]], [[3.0, 11.0], [8.0, 14.0]],
                              [[0.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(maps, expected)
    # no position reaches the logit: the channels peak at different places
    assert maps[0, 0].max() + 0.5 < logits[0, 0]


@pytest.fixture(scope="module")
def gmp_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10)
    model.avgpool = nn.AdaptiveMaxPool2d(1)
    with torch.no_grad():
        model.fc.bias.normal_(0, 1)
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def layer4(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with hooked(model, ["layer4"]) as hooks, torch.no_grad():
        logits = model(x)
    return hooks["layer4"], logits


def test_gmp_head_is_found_and_checked(gmp_resnet, images):
    activation, logits = layer4(gmp_resnet, images)
    head = find_cam_head(gmp_resnet, activation, logits, layer="layer4")
    assert head.pool == "max" and head.name == "fc" and not head.relu
    weight, bias = gmp_resnet.fc.weight, gmp_resnet.fc.bias
    # logit_k - b_k = sum_c W_kc max_ij A_c (each channel at its own peak)
    torch.testing.assert_close(logits - bias, activation.amax((-2, -1)) @ weight.T,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head.logits(activation), logits, rtol=1e-5, atol=1e-5)


def test_gmp_cam_is_w_times_a(gmp_resnet, images):
    activation, logits = layer4(gmp_resnet, images)
    targets = torch.tensor([[3, 7], [5, 1]])
    maps = explain(gmp_resnet, images, targets, method="cam", upsample=False)
    rows = gmp_resnet.fc.weight[targets]  # (B, K, C)
    torch.testing.assert_close(maps, torch.einsum("bkc,bchw->bkhw", rows, activation),
                               rtol=1e-5, atol=1e-5)
    # with GMP the spatial mean is not the logit any more (that identity is GAP's)
    picked = logits.gather(1, targets) - gmp_resnet.fc.bias[targets]
    assert (maps.mean((-2, -1)) - picked).abs().min() > 1e-2
    assert count_hooks(gmp_resnet) == 0


def test_gradcam_is_relu_cam_for_gmp_heads_too(gmp_resnet, images):
    """dS_k/dA_c(i,j) = W_kc at each channel's peak and 0 elsewhere: the spatial mean of the
    gradient is W_kc / (h w) as with GAP, so Grad-CAM_k = ReLU(CAM_k) / (h w) here too."""
    targets = [[0, 2], [3, 1]]
    gradcam = explain(gmp_resnet, images, targets, method="gradcam", upsample=False)
    cam = explain(gmp_resnet, images, targets, method="cam", upsample=False)
    assert (cam < 0).any() and (cam > 0).any()
    factor = fitted_factor(gradcam, cam.clamp(min=0))
    area = cam.shape[-2] * cam.shape[-1]
    torch.testing.assert_close(factor, torch.full_like(factor, 1 / area), rtol=1e-4, atol=0)


def test_gmp_cam_on_a_timm_max_pool_head():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=6,
                              global_pool="max").eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    activation, logits = layer4(model, x)
    head = find_cam_head(model, activation, logits)
    assert head.pool == "max"
    maps = explain(model, x, [[3, 4], [5, 0]], method="cam", upsample=False)
    rows = model.fc.weight[torch.tensor([[3, 4], [5, 0]])]
    torch.testing.assert_close(maps, torch.einsum("bkc,bchw->bkhw", rows, activation),
                               rtol=1e-5, atol=1e-5)


class GeMPool(nn.Module):
    """Generalised-mean pooling (p = 3): neither the mean nor the maximum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=1e-6).pow(3).mean((-2, -1), keepdim=True).pow(1 / 3)


def test_cam_refuses_a_pooling_that_is_neither_mean_nor_max():
    model = randomised(TinyGAP(3, 4, 4, kernel=3))
    model.pool = GeMPool()
    with pytest.raises(HeadError, match="spatial mean or maximum .* does not reproduce "
                       "TinyGAP's logits"):
        explain(model, torch.randn(1, 3, 6, 6), 0, method="cam")
    assert count_hooks(model) == 0
