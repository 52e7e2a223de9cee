"""The CAM family against independent implementations: pytorch-grad-cam and torchcam.

Every comparison is at the target layer's own resolution, before any min-max scaling: loupe
with ``upsample=False``; pytorch-grad-cam with its ``scale_cam_image`` (min-max + cv2 resize)
replaced by the identity, so its output is its per-layer ``ReLU(sum_c w_c A_c)``; torchcam with
``normalized=False``. Multi-label targets run the peers once per target column.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchcam.methods import CAM as TorchCAM
from torchvision.models import resnet18

from loupe import explain
from tests.conftest import count_hooks

TARGETS = [[3, 7], [5, 1]]
GRADIENT_PEERS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    # 64x64: layer4 is 2x2, layer3 4x4
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def peer_maps(peer: type, model: torch.nn.Module, layer: str, images: torch.Tensor):
    """(B, K, h, w) maps of pytorch-grad-cam's ``peer`` for TARGETS, one run per column,
    without its min-max scaling and resizing."""
    import pytorch_grad_cam.base_cam as base_cam

    columns = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
        for k in range(len(TARGETS[0])):
            with peer(model, [model.get_submodule(layer)]) as extractor:
                out = extractor(images, [ClassifierOutputTarget(row[k]) for row in TARGETS])
            columns.append(torch.from_numpy(np.asarray(out, dtype=np.float32)))
    model.zero_grad(set_to_none=True)
    return torch.stack(columns, dim=1)


@pytest.fixture(scope="module")
def gradient_peers(model, images) -> dict[tuple[str, str], torch.Tensor]:
    """Peer maps of every gradient method at layer4 and layer3, computed once."""
    return {
        (method, layer): peer_maps(peer, model, layer, images)
        for method, peer in GRADIENT_PEERS.items()
        for layer in ("layer4", "layer3")
    }


def assert_agree(ours: torch.Tensor, peer: torch.Tensor, rtol: float = 1e-4) -> None:
    """Same shape, and max |ours - peer| <= rtol * max |peer| on non-trivial maps."""
    assert ours.shape == peer.shape
    scale = peer.abs().amax()
    # the maps must carry information, or agreement would prove nothing
    assert scale > 0
    assert (peer.flatten(2).amax(-1) > peer.flatten(2).amin(-1)).all()
    error = (ours - peer).abs().amax()
    assert error <= rtol * scale, f"relative error {float(error / scale):.3g}"


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
@pytest.mark.parametrize("method", sorted(GRADIENT_PEERS))
def test_gradient_cams_match_pytorch_grad_cam(method, layer, model, images, gradient_peers):
    ours = explain(model, images, TARGETS, method=method, target_layer=layer, upsample=False)
    assert_agree(ours, gradient_peers[method, layer])
    assert count_hooks(model) == 0


def test_peer_comparison_tells_the_methods_apart(model, images, gradient_peers):
    """At layer3 (spatially varying gradients) every method differs from every other method's
    peer by far more than the tolerance, so the agreement tests above can fail. (At layer4 of
    a GAP + linear network the gradients are spatially constant and Grad-CAM, XGrad-CAM and
    HiResCAM coincide, as they should.)"""
    for method in GRADIENT_PEERS:
        ours = explain(model, images, TARGETS, method=method, target_layer="layer3",
                       upsample=False)
        for other in GRADIENT_PEERS:
            if other != method:
                peer = gradient_peers[other, "layer3"]
                error = (ours - peer).abs().amax() / peer.abs().amax()
                assert error > 1e-2, (method, other)


def test_scorecam_matches_pytorch_grad_cam(model):
    # layer1 (64 channels, 8x8 at 32x32 input) keeps the B*C masked forwards cheap
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ours = explain(model, images, TARGETS, method="scorecam", target_layer="layer1",
                   upsample=False, chunk_size=24)
    peer = peer_maps(ScoreCAM, model, "layer1", images)
    assert_agree(ours, peer)
    # and differs from Grad-CAM at the same layer, so the check can fail
    gradcam = explain(model, images, TARGETS, method="gradcam", target_layer="layer1",
                      upsample=False)
    assert (gradcam / gradcam.amax() - peer / peer.amax()).abs().amax() > 1e-2


def torchcam_maps(model: torch.nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    columns = []
    with TorchCAM(model, layer, "fc", input_shape=tuple(images.shape[1:])) as extractor:
        with torch.no_grad():
            model(images)
        for k in range(len(TARGETS[0])):
            (cam,) = extractor(class_idx=[row[k] for row in TARGETS], normalized=False)
            columns.append(cam)
    return torch.stack(columns, dim=1)


def test_cam_matches_torchcam(model, images):
    ours = explain(model, images, TARGETS, method="cam", upsample=False)
    peer = torchcam_maps(model, "layer4", images)
    assert ours.shape == (2, 2, 2, 2)
    # CAM is signed: compare the raw maps, with their negative parts
    assert (peer < 0).any() and (peer > 0).any()
    error = (ours - peer).abs().amax()
    assert error <= 1e-4 * peer.abs().amax()
    # the wrong class rows would not agree
    swapped = ours.flip(1)
    assert (swapped - peer).abs().amax() > 1e-2 * peer.abs().amax()
    assert count_hooks(model) == 0
