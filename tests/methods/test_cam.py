"""CAM (Zhou et al. 2016): exact values by hand, the GAP identities, head discovery and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18
from torchvision.models.convnext import LayerNorm2d

from loupe import explain
from loupe.hooks import hooked
from loupe.layers import LayerError
from loupe.methods.heads import HeadError, find_cam_head
from loupe.targets import TargetError
from tests.conftest import count_hooks


class TinyGAP(nn.Module):
    """conv features -> GAP -> Flatten -> Linear, with hand-set weights."""

    def __init__(self, in_channels: int = 2, channels: int = 2, classes: int = 3, kernel: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2, bias=False)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


class TinyDenseNet(nn.Module):
    """DenseNet's head: ``F.relu`` (not in place) on the features inside forward, then GAP."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6))
        self.classifier = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class TinyConvNeXtHead(nn.Module):
    """ConvNeXt's head: GAP -> LayerNorm2d -> Flatten -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(8, eps=1e-6), nn.Flatten(1), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


def hand_model() -> TinyGAP:
    model = TinyGAP()
    with torch.no_grad():
        model.features[0].weight.copy_(torch.eye(2)[:, :, None, None])
        model.fc.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]]))
        model.fc.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return model.eval()


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter redrawn, so that no bias or LayerNorm affine is trivially 0 or 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    with torch.no_grad():
        model.fc.bias.normal_(0, 1)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def test_cam_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [-1.0, 2.0]]]])
    maps = explain(hand_model(), x, [[0, 2, -1]], method="cam", upsample=False)
    # CAM_0 = x0 + 2 x1, CAM_2 = 3 x0 + x1, padding -> 0
    expected = torch.tensor([[[[1.0, 4.0], [1.0, 8.0]], [[3.0, 7.0], [8.0, 14.0]],
                              [[0.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(maps, expected)
    # class 1 = -x1: negative values are kept (CAM is signed)
    maps = explain(hand_model(), x, 1, method="cam", upsample=False)
    torch.testing.assert_close(maps, torch.tensor([[[[0.0, -1.0], [1.0, -2.0]]]]))


def test_cam_spatial_mean_is_logit_minus_bias(resnet, images):
    targets = torch.tensor([[3, 7, 0], [5, 1, 999]])
    maps = explain(resnet, images, targets, method="cam", upsample=False)
    with torch.no_grad():
        logits = resnet(images)
    expected = logits.gather(1, targets) - resnet.fc.bias[targets]
    torch.testing.assert_close(maps.mean((-2, -1)), expected, rtol=1e-4, atol=1e-5)
    # the bias really is subtracted
    assert (maps.mean((-2, -1)) - logits.gather(1, targets)).abs().min() > 1e-2


def test_cam_top1_default_and_upsampling(resnet, images):
    maps = explain(resnet, images, method="cam")
    assert maps.shape == (2, 1, 64, 64) and maps.dtype == torch.float32
    with torch.no_grad():
        top1 = resnet(images).argmax(1)
    raw = explain(resnet, images, top1[:, None], method="cam", upsample=False)
    torch.testing.assert_close(maps, F.interpolate(raw, size=(64, 64), mode="bilinear"))


def fitted_factor(gradcam: torch.Tensor, relu_cam: torch.Tensor) -> torch.Tensor:
    """Per-map least-squares ``c`` in ``gradcam ~ c * relu_cam`` over the maps where
    ``relu_cam`` is not all zero (there ``gradcam`` must be zero too), with a check of the fit."""
    g, r = gradcam.flatten(2), relu_cam.flatten(2)
    live = (r > 0).any(-1)
    assert (g[~live] == 0).all()
    assert live.sum() >= 2
    g, r = g[live], r[live]
    factor = (g * r).sum(-1) / (r * r).sum(-1)
    torch.testing.assert_close(g, factor[..., None] * r, rtol=1e-4, atol=1e-6 * g.abs().max())
    return factor


@pytest.mark.parametrize("which", ["resnet18", "tiny"])
def test_gradcam_is_relu_cam_for_gap_linear_networks(which, resnet, images):
    """For logits = W GAP(A) + b, dS_k/dA_c(i,j) = W_kc / (h w) everywhere, so
    Grad-CAM_k = ReLU(sum_c W_kc A_c) / (h w) = ReLU(CAM_k) / (h w)."""
    if which == "tiny":
        model = randomised(TinyGAP(3, 5, 4, kernel=3), seed=5)
        x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(4))
        layer = "features"
    else:
        model, x, layer = resnet, images, "layer4"
    targets = [[0, 2], [3, 1]]
    gradcam = explain(model, x, targets, method="gradcam", target_layer=layer, upsample=False)
    cam = explain(model, x, targets, method="cam", target_layer=layer, upsample=False)
    assert (cam < 0).any() and (cam > 0).any()  # the ReLU matters
    factor = fitted_factor(gradcam, cam.clamp(min=0))
    area = cam.shape[-2] * cam.shape[-1]
    torch.testing.assert_close(factor, torch.full_like(factor, 1 / area), rtol=1e-4, atol=0)


def test_cam_densenet_style_head_pools_relu_features():
    torch.manual_seed(0)
    model = randomised(TinyDenseNet())
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(6))
    maps = explain(model, x, [[0, 4], [2, 2]], method="cam", upsample=False)
    with torch.no_grad():
        features = model.features(x)
        logits = model(x)
    assert (features < 0).any()  # otherwise the ReLU would be invisible
    weight = model.classifier.weight
    expected = torch.stack(
        [torch.einsum("c,chw->hw", weight[k], features[b].clamp(min=0))
         for b, row in enumerate([[0, 4], [2, 2]]) for k in row]
    ).view(2, 2, 5, 5)
    torch.testing.assert_close(maps, expected)
    with hooked(model, ["features"]) as captured, torch.no_grad():
        output = model(x)
        head = find_cam_head(model, captured["features"], output, layer="features")
    assert head.relu and head.name == "classifier"
    picked = torch.tensor([[0, 4], [2, 2]])
    torch.testing.assert_close(
        maps.mean((-2, -1)), logits.gather(1, picked) - head.constant[picked]
    )


def test_cam_folds_a_layer_norm_head():
    """ConvNeXt style: CAM_k = sum_c W_kc gamma_c (A_c - mu) / sigma, with mu, sigma the mean
    and std over channels of the pooled vector; its spatial mean is logit_k - (W beta + b)_k."""
    model = randomised(TinyConvNeXtHead(), seed=7)
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(8))
    targets = [[0, 3], [4, 1]]
    maps = explain(model, x, targets, method="cam", upsample=False)
    norm, linear = model.classifier[0], model.classifier[2]
    with torch.no_grad():
        features = model.features(x)
        logits = model(x)
    expected = torch.zeros(2, 2, 4, 5)
    for b in range(2):  # by hand, one position at a time
        pooled = features[b].mean((1, 2))
        mu = pooled.mean()
        sigma = (((pooled - mu) ** 2).mean() + norm.eps).sqrt()
        for j, k in enumerate(targets[b]):
            for i in range(4):
                for w in range(5):
                    expected[b, j, i, w] = sum(
                        linear.weight[k, c] * norm.weight[c] * (features[b, c, i, w] - mu) / sigma
                        for c in range(8)
                    )
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)
    constant = linear.bias + linear.weight @ norm.bias
    picked = torch.tensor(targets)
    torch.testing.assert_close(
        maps.mean((-2, -1)), logits.gather(1, picked) - constant[picked], rtol=1e-4, atol=1e-5
    )


def test_cam_padding_targets_give_zero_maps(resnet, images):
    maps = explain(resnet, images, [[3], [5, 1]], method="cam", upsample=False)
    assert maps.shape == (2, 2, 2, 2)
    assert (maps[0, 1] == 0).all() and (maps[1, 1] != 0).any()


def test_cam_is_batch_invariant(resnet, images):
    both = explain(resnet, images, [[3, 7], [5, 1]], method="cam", upsample=False)
    first = explain(resnet, images[:1], [[3, 7]], method="cam", upsample=False)
    second = explain(resnet, images[1:], [[5, 1]], method="cam", upsample=False)
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-5, atol=1e-5)


def test_cam_named_head_matches_automatic_head(resnet, images):
    named = explain(resnet, images, [[3], [5]], method="cam", head="fc", upsample=False)
    found = explain(resnet, images, [[3], [5]], method="cam", upsample=False)
    torch.testing.assert_close(named, found)


def test_cam_errors_are_clear_and_leave_no_hooks(resnet, images):
    with pytest.raises(TargetError, match="out of range"):
        explain(resnet, images, [[3], [1000]], method="cam")
    with pytest.raises(ValueError, match="score-function targets are not supported"):
        explain(resnet, images, lambda out: out[:, 0], method="cam")
    with pytest.raises(LayerError, match="'fc'"):
        explain(resnet, images, 3, method="cam", head="fcc")
    with pytest.raises(HeadError, match="'layer4' of ResNet is a Sequential, not an nn.Linear"):
        explain(resnet, images, 3, method="cam", head="layer4")
    with pytest.raises(HeadError, match="reads 512 features but target layer 'layer3' has 256"):
        explain(resnet, images, 3, method="cam", target_layer="layer3")
    assert count_hooks(resnet) == 0
    assert not resnet.training and all(p.requires_grad for p in resnet.parameters())


class HiddenHead(nn.Module):
    """GAP followed by a hidden Linear + ReLU: not a CAM network."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(), nn.Linear(hidden, 4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def test_cam_refuses_a_hidden_layer_head():
    x = torch.randn(1, 3, 8, 8)
    # hidden width 16 != 8 channels: caught by the shapes, names the ReLU in the way
    with pytest.raises(HeadError, match=r"^CAM needs a global-pooling \+ linear head: "
                       r"HiddenHead's final linear layer 'classifier.4' reads 16 features but "
                       r"target layer 'features' has 8 channels; ReLU 'classifier.2'"):
        explain(randomised(HiddenHead(16)), x, 0, method="cam")
    # hidden width 8 == 8 channels: the shapes fit, the forward check catches it
    model = randomised(HiddenHead(8))
    with pytest.raises(HeadError, match="does not reproduce HiddenHead's logits"):
        explain(model, x, 0, method="cam")
    assert count_hooks(model) == 0


def test_cam_names_a_head_with_the_wrong_number_of_outputs():
    model = randomised(HiddenHead(16))
    with pytest.raises(HeadError, match="layer 'classifier.1' of HiddenHead has 16 outputs but "
                       "the model gives 4 logits"):
        explain(model, torch.randn(1, 3, 8, 8), 0, method="cam", head="classifier.1")


class Counting(TinyGAP):
    """Records, for each forward, whether autograd was recording."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_modes.append(torch.is_grad_enabled())
        return super().forward(x)


def test_cam_is_one_forward_without_autograd():
    model = randomised(Counting(3, 4, 4, kernel=3))
    model.grad_modes = []
    explain(model, torch.randn(2, 3, 6, 6), [[0, 1], [2, 3]], method="cam",
            target_layer="features")
    assert model.grad_modes == [False]
    assert all(p.grad is None for p in model.parameters())


def test_cam_under_autocast_is_close_to_float32(resnet, images):
    exact = explain(resnet, images, [[3], [5]], method="cam", upsample=False)
    low = explain(resnet, images, [[3], [5]], method="cam", upsample=False, autocast=True)
    assert low.dtype == torch.float32
    difference = (low - exact).abs().amax() / exact.abs().amax()
    assert difference <= 0.05
    # and autocast really ran: bfloat16 rounding (8-bit mantissa) shows, unlike float32's
    assert difference > 1e-3


def test_cam_on_a_timm_model():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    with torch.no_grad():
        model.fc.bias.normal_(0, 1)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    maps = explain(model, x, [[3, 7], [5, 1]], method="cam", upsample=False)
    with torch.no_grad():
        logits = model(x)
    picked = torch.tensor([[3, 7], [5, 1]])
    torch.testing.assert_close(
        maps.mean((-2, -1)), logits.gather(1, picked) - model.fc.bias[picked],
        rtol=1e-4, atol=1e-5,
    )
