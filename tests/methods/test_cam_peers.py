"""The CAM-family methods added from pytorch-grad-cam, and its options, against pytorch-grad-cam.

Same protocol as ``test_cam_family.py``: the seeded torchvision resnet18, maps compared at the
target layer's own resolution, pytorch-grad-cam's ``scale_cam_image`` replaced by the identity
(or, where loupe's maps are themselves min-max scaled, by the scaling without the resize), one
peer run per target column, agreement to 1e-4 of the peer's largest value.

Two things are made equal on purpose and said so where they are:
- the sign of a principal component: pytorch-grad-cam's ``get_2d_projection`` leaves it to
  numpy's SVD; loupe puts the value of largest magnitude positive, which is the peer's own
  ``get_2d_projection_with_sign_correction`` (Seg-Eigen-CAM). The peer runs with that function
  in place of ``get_2d_projection``; the SVD and everything around it is still the peer's.
- RandomCAM's random weights: the peer's ``np.random.uniform`` returns loupe's draw.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam
import pytorch_grad_cam.base_cam as base_cam
import torch
from pytorch_grad_cam import (
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RandomCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputReST,
    ClassifierOutputTarget,
    FinerWeightedTarget,
)
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

from loupe import explain
from loupe.methods.random_cam import random_weights
from loupe.methods.shapley import rest_target
from tests.conftest import count_hooks
from tests.methods import test_cam_family as family
from tests.methods.test_cam_family import assert_agree

model, images = family.model, family.images  # the seeded resnet18 and its two 64x64 images
TARGETS = [[3, 7], [5, 1]]
PROJECTION_MODULES = [
    "base_cam", "eigen_cam", "eigen_grad_cam", "grad_cam_elementwise", "hirescam", "layer_cam",
]


def scale_only(cam, target_size=None):
    """pytorch-grad-cam's ``scale_cam_image`` without its resize."""
    cam = np.asarray(cam, dtype=np.float32)
    flat = cam.reshape(len(cam), -1)
    shifted = flat - flat.min(1, keepdims=True)
    return (shifted / (1e-7 + shifted.max(1, keepdims=True))).reshape(cam.shape)


def peer_maps(peer, model, layer, images, *, targets=None, scale=False, call=None,
              patches=()):
    """(B, K, h, w) maps of pytorch-grad-cam's ``peer`` at ``layer``, one run per column of
    ``targets`` (default: ClassifierOutputTarget of TARGETS), without its resize (and without
    its min-max scaling unless ``scale``); ``patches``: more (module, name, value) to patch."""
    targets = targets or [[ClassifierOutputTarget(k) for k in row] for row in TARGETS]
    columns = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base_cam, "scale_cam_image",
                      scale_only if scale else lambda cam, target_size=None: cam)
        for name in PROJECTION_MODULES:
            module = getattr(pytorch_grad_cam, name)
            patch.setattr(module, "get_2d_projection", get_2d_projection_with_sign_correction)
        for module, name, value in patches:
            patch.setattr(module, name, value)
        for k in range(len(targets[0])):
            layers = [model.get_submodule(layer)] if layer else []
            with peer(model, layers) as extractor:
                out = extractor(images, [row[k] for row in targets], **(call or {}))
            columns.append(torch.from_numpy(np.asarray(out, dtype=np.float32)))
    model.zero_grad(set_to_none=True)
    return torch.stack(columns, dim=1)


def ours(model, images, method, layer, targets=TARGETS, **options):
    maps = explain(model, images, targets, method=method, target_layer=layer, upsample=False,
                   **options)
    assert count_hooks(model) == 0
    return maps


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
@pytest.mark.parametrize(("method", "peer"), [
    ("eigencam", EigenCAM), ("eigengradcam", EigenGradCAM),
    ("gradcam-elementwise", GradCAMElementWise), ("kpcacam", KPCA_CAM),
])
def test_new_methods_match_pytorch_grad_cam(method, peer, layer, model, images):
    assert_agree(ours(model, images, method, layer), peer_maps(peer, model, layer, images))


def test_eigencam_differs_from_gradcam_and_kpcacam(model, images):
    """The agreements above can fail: the methods' maps differ by far more than 1e-4."""
    eigen = ours(model, images, "eigencam", "layer3")
    for other in ("gradcam", "kpcacam", "eigengradcam"):
        maps = ours(model, images, other, "layer3")
        assert (maps / maps.amax() - eigen / eigen.amax()).abs().amax() > 1e-2, other


def test_kpcacam_kernels_match_pytorch_grad_cam(model, images):
    for kernel, gamma in [("rbf", None), ("poly", 1e-3), ("cosine", None)]:
        def peer(m, t, kernel=kernel, gamma=gamma):
            return KPCA_CAM(m, t, kernel=kernel, gamma=gamma)

        expected = peer_maps(peer, model, "layer3", images)
        maps = ours(model, images, "kpcacam", "layer3", kernel=kernel, gamma=gamma)
        assert_agree(maps, expected)


@pytest.mark.parametrize(("method", "peer"), [
    ("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("xgradcam", XGradCAM),
    ("layercam", LayerCAM), ("hirescam", HiResCAM), ("gradcam-elementwise", GradCAMElementWise),
])
def test_eigen_smooth_matches_pytorch_grad_cam(method, peer, model, images):
    maps = ours(model, images, method, "layer3", eigen_smooth=True)
    assert_agree(maps, peer_maps(peer, model, "layer3", images, call={"eigen_smooth": True}))
    plain = ours(model, images, method, "layer3")
    assert (maps / maps.amax() - plain / plain.amax()).abs().amax() > 1e-2


def test_ablationcam_matches_pytorch_grad_cam(model):
    # layer1 (64 channels, 8x8 at 32x32 input) keeps the peer's B*C forwards cheap
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    peer = peer_maps(AblationCAM, model, "layer1", images)
    assert_agree(ours(model, images, "ablationcam", "layer1", chunk_size=24), peer)
    gradcam = ours(model, images, "gradcam", "layer1")
    assert (gradcam / gradcam.amax() - peer / peer.amax()).abs().amax() > 1e-2
    smooth = peer_maps(AblationCAM, model, "layer1", images, call={"eigen_smooth": True})
    assert_agree(ours(model, images, "ablationcam", "layer1", eigen_smooth=True), smooth)


def test_fullgrad_matches_pytorch_grad_cam(model, images):
    # the peer min-max scales its sum; loupe returns the raw sum: compare after that scaling
    peer = peer_maps(FullGrad, model, None, images, scale=True)
    maps = explain(model, images, TARGETS, method="fullgrad")
    assert maps.shape == (2, 2, 64, 64)
    assert_agree(torch.from_numpy(scale_only(maps.flatten(0, 1).numpy())).view_as(maps), peer)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_shapleycam_matches_pytorch_grad_cam(layer, model, images):
    """With the ReST score (curved through its softmax) the Hessian term is not zero."""
    rest = [[rest_target(k) for k in row] for row in TARGETS]
    maps = torch.cat([ours(model, images[b : b + 1], "shapleycam", layer, targets=rest[b])
                      for b in range(2)])
    peer = peer_maps(ShapleyCAM, model, layer, images,
                     targets=[[ClassifierOutputReST(k) for k in row] for row in TARGETS])
    assert_agree(maps, peer)
    gradcam = torch.cat([ours(model, images[b : b + 1], "gradcam", layer, targets=rest[b])
                         for b in range(2)])
    assert (gradcam - peer).abs().amax() > 1e-3 * peer.abs().amax()


def finer_targets(model, images, alpha=1.0):
    """pytorch-grad-cam's FinerCAM targets for TARGETS: ranks 1-3 of argsort(|y - y_k|)."""
    with torch.no_grad():
        logits = model(images).numpy()
    return [[FinerWeightedTarget(k, list(np.argsort(np.abs(logits[b] - logits[b, k]))[1:4]),
                                 alpha) for k in row] for b, row in enumerate(TARGETS)]


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_finercam_matches_pytorch_grad_cam(layer, model, images):
    peer = peer_maps(GradCAM, model, layer, images, targets=finer_targets(model, images, 0.7))
    assert_agree(ours(model, images, "finercam", layer, alpha=0.7), peer)
    gradcam = ours(model, images, "gradcam", layer)
    assert (gradcam / gradcam.amax() - peer / peer.amax()).abs().amax() > 1e-2


def test_finercam_top1_matches_pytorch_grad_cam_finercam(model, images):
    """Without targets both explain the top-1 class against its three closest classes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
        with FinerCAM(model, [model.layer3]) as extractor:
            peer = torch.from_numpy(extractor(images, None))[:, None]
    model.zero_grad(set_to_none=True)
    assert_agree(ours(model, images, "finercam", "layer3", targets=None), peer)


def test_randomcam_matches_pytorch_grad_cam_with_the_same_draw(model, images):
    weights = random_weights(256, seed=4).numpy()
    patch = (pytorch_grad_cam.random_cam.np.random, "uniform",
             lambda low, high, size: np.tile(weights, (size[0], 1)))
    peer = peer_maps(RandomCAM, model, "layer3", images, patches=[patch])
    assert_agree(ours(model, images, "randomcam", "layer3", seed=4), peer)
    other = ours(model, images, "randomcam", "layer3", seed=5)
    assert (other - peer).abs().amax() > 1e-2 * peer.abs().amax()


def test_aug_smooth_matches_pytorch_grad_cam(model, images):
    """pytorch-grad-cam min-max scales each view's map before averaging: compare that. (The
    wrapper is the same for every method; test_cam_options checks it by hand on others.)"""
    maps = ours(model, images, "gradcam", "layer3", aug_smooth=True)
    expected = peer_maps(GradCAM, model, "layer3", images, scale=True,
                         call={"aug_smooth": True})
    assert_agree(maps, expected)
    plain = peer_maps(GradCAM, model, "layer3", images, scale=True)
    assert (plain - expected).abs().amax() > 1e-2


def test_scorecam_smoothing_matches_pytorch_grad_cam(model):
    # one image, one target, layer1 (64 channels at 32x32): the peer's 6 x 64 masked forwards
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = [[ClassifierOutputTarget(3)]]
    for call in ({"aug_smooth": True}, {"eigen_smooth": True}):
        expected = peer_maps(ScoreCAM, model, "layer1", images, targets=targets,
                             scale="aug_smooth" in call, call=call)
        assert_agree(ours(model, images, "scorecam", "layer1", targets=[[3]], **call), expected)


def test_aug_smooth_and_eigen_smooth_together(model, images):
    maps = ours(model, images, "gradcam++", "layer4", aug_smooth=True, eigen_smooth=True)
    expected = peer_maps(GradCAMPlusPlus, model, "layer4", images, scale=True,
                         call={"aug_smooth": True, "eigen_smooth": True})
    assert_agree(maps, expected)
