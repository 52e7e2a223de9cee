"""Options of the CAM family: counterfactual, eigen_smooth, aug_smooth; the hooks' ``edit``.

Hand oracles on the small SiLU ResNet of the registry test (``tests.test_registry``); the
agreement with pytorch-grad-cam is in ``test_cam_peers.py``.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from loupe import explain, get_method, list_methods
from loupe.hooks import hooked
from loupe.methods.augment import FACTORS, FLIPS, augmented_views, minmax
from loupe.methods.finer import finer_scores
from loupe.methods.projection import channel_maps, first_component, positive_peak
from loupe.targets import Targets
from tests.conftest import count_hooks
from tests.test_registry import tiny_resnet

GRADIENT_CAMS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam",
                 "gradcam-elementwise", "shapleycam"]
SMOOTHABLE = [m for m in list_methods()
              if "aug_smooth" in inspect.signature(get_method(m).function).parameters]


@pytest.fixture(scope="module")
def model():
    return tiny_resnet()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def maps_of(model, images, method, targets, layer="layer3", **options):
    return explain(model, images, targets, method=method, target_layer=layer, upsample=False,
                   **options)


# -- counterfactual --------------------------------------------------------------------------

@pytest.mark.parametrize("method", GRADIENT_CAMS)
def test_counterfactual_is_the_map_of_the_negated_score(method, model, images):
    """Grad-CAM, Section 6: the counterfactual map is the map of ``-S``."""
    negated = [lambda out: -out[:, 3], lambda out: -out[:, 7]]
    expected = maps_of(model, images, method, negated)
    counterfactual = maps_of(model, images, method, [[3, 7]] * 3, counterfactual=True)
    scale = expected.abs().amax()
    assert scale > 0
    torch.testing.assert_close(counterfactual, expected, rtol=1e-5, atol=1e-6 * scale)
    plain = maps_of(model, images, method, [[3, 7]] * 3)
    assert (plain - counterfactual).abs().amax() > 1e-2 * scale


def test_counterfactual_gradcam_at_a_linear_head_is_the_negative_part(model, images):
    """At the layer the GAP + linear head reads, the Grad-CAM weights are ``W_k / hw``; the
    counterfactual map is ``ReLU(-sum_c w_c A_c)``, the part the plain map clips away."""
    targets = [[3], [5], [0]]
    with torch.no_grad():
        activation = model.layer4(model.layer3(model.layer2(model.layer1(
            model.relu(model.bn1(model.conv1(images)))))))
    rows = model.fc.weight[torch.tensor([3, 5, 0])] / activation[0, 0].numel()
    raw = torch.einsum("bc,bchw->bhw", rows, activation)[:, None]
    counterfactual = maps_of(model, images, "gradcam", targets, "layer4", counterfactual=True)
    torch.testing.assert_close(counterfactual, (-raw).clamp(min=0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(maps_of(model, images, "gradcam", targets, "layer4"),
                               raw.clamp(min=0), rtol=1e-4, atol=1e-6)


def test_counterfactual_finercam_negates_the_comparison_score(model, images):
    classes = torch.tensor([[3, 7]] * 3)
    bound = Targets(3, classes=classes)
    negated = [lambda out, k=k: -finer_scores(out, bound, 3, 1.0)[:, k] for k in range(2)]
    expected = maps_of(model, images, "gradcam", negated)
    maps = maps_of(model, images, "finercam", classes, counterfactual=True)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6 * expected.abs().amax())


def test_counterfactual_is_refused_with_eigen_smooth(model, images):
    """A principal component ignores the weights' sign: the pair would be a silent no-op."""
    negated = maps_of(model, images, "gradcam", lambda out: -out[:, 3], eigen_smooth=True)
    torch.testing.assert_close(negated, maps_of(model, images, "gradcam", 3, eigen_smooth=True))
    with pytest.raises(ValueError, match="counterfactual has no effect with eigen_smooth"):
        maps_of(model, images, "gradcam", 3, eigen_smooth=True, counterfactual=True)
    assert count_hooks(model) == 0


# -- eigen_smooth ----------------------------------------------------------------------------

def test_first_component_is_the_top_principal_axis_with_a_positive_peak():
    x = torch.randn(2, 3, 5, 4, 6, generator=torch.Generator().manual_seed(0))  # (.., C, h, w)
    maps = first_component(x)
    assert maps.shape == (2, 3, 4, 6)
    points = x.flatten(-2).transpose(-1, -2).double()  # (2, 3, hw, C)
    centred = points - points.mean(-2, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    expected = (centred @ vh[..., 0, :, None])[..., 0]
    expected = positive_peak(expected.flatten(0, 1)).view(2, 3, 4, 6)
    torch.testing.assert_close(maps, expected.float(), rtol=1e-5, atol=1e-5)
    flat = maps.flatten(-2)
    assert (flat.gather(-1, flat.abs().argmax(-1, keepdim=True)) > 0).all()


def test_first_component_is_the_same_through_both_gram_matrices():
    x = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(2))  # hw=9 > C=6
    y = torch.cat([x, torch.zeros(4, 6, 3, 3)], 1)  # C=12 >= hw=9: same points, zero channels
    torch.testing.assert_close(first_component(x), first_component(y), rtol=1e-5, atol=1e-6)


def test_eigen_smooth_differs_from_the_sum_and_ignores_a_zero_map():
    weighted = torch.randn(2, 3, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    weighted[1, 2] = 0
    smooth = channel_maps(weighted, True)
    assert (smooth[1, 2] == 0).all()
    assert (smooth - channel_maps(weighted)).abs().amax() > 0.1
    with pytest.raises(ValueError, match="eigen_smooth must be True or False"):
        channel_maps(weighted, "yes")


# -- aug_smooth ------------------------------------------------------------------------------

def test_augmented_views_are_flips_times_brightness():
    images = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    views, flips = augmented_views(images)
    assert views.shape == (12, 3, 4, 5) and flips.tolist() == [False] * 3 + [True] * 3
    for b in range(2):
        for v, (flip, factor) in enumerate((f, s) for f in FLIPS for s in FACTORS):
            expected = (images[b].flip(-1) if flip else images[b]) * factor
            torch.testing.assert_close(views[6 * b + v], expected)


@pytest.mark.parametrize("method", ["gradcam", "randomcam"])
def test_aug_smooth_averages_six_scaled_views(method, model, images):
    targets = [[3, 7], [5, 1], [0, 9]]
    expected = torch.zeros(3, 2, 8, 8)
    for flip in FLIPS:
        for factor in FACTORS:
            view = (images.flip(-1) if flip else images) * factor
            maps = maps_of(model, view, method, targets)
            expected += minmax(maps.flip(-1) if flip else maps) / 6
    smooth = maps_of(model, images, method, targets, aug_smooth=True)
    torch.testing.assert_close(smooth, expected, rtol=1e-4, atol=1e-5)


def test_aug_smooth_binds_top1_on_the_clean_image(model, images):
    with torch.no_grad():
        top1 = model(images).argmax(1, keepdim=True)
    unbound = maps_of(model, images, "gradcam", None, aug_smooth=True)
    torch.testing.assert_close(unbound, maps_of(model, images, "gradcam", top1, aug_smooth=True))


def test_every_layer_method_has_aug_smooth():
    layered = {m for m in list_methods() if get_method(m).uses_layer}
    assert layered | {"fullgrad"} == set(SMOOTHABLE)


@pytest.mark.parametrize("method", SMOOTHABLE)
def test_aug_smooth_is_batch_invariant_and_zero_on_padding(method, model, images):
    options = {"chunk_size": 64} if method == "scorecam" else {}
    options["layer"] = {"cam": "layer4", "fullgrad": None}.get(method, "layer3")
    targets = [[3, 7], [5, -1], [0, 9]]
    batch = maps_of(model, images, method, targets, aug_smooth=True, **options)
    assert batch.shape[:2] == (3, 2) and (batch[1, 1] == 0).all()
    assert batch.amin() >= 0 and batch.amax() <= 1 and batch[0].amax() > 0
    alone = maps_of(model, images[2:], method, [[0, 9]], aug_smooth=True, **options)
    torch.testing.assert_close(alone, batch[2:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("option", "value"), [("aug_smooth", 1), ("eigen_smooth", "no"),
                                               ("counterfactual", None)])
def test_options_must_be_booleans(option, value, model, images):
    with pytest.raises(ValueError, match=f"{option} must be True or False"):
        maps_of(model, images, "gradcam", 3, **{option: value})
    assert count_hooks(model) == 0


def test_methods_without_a_layer_reject_aug_smooth(model, images):
    with pytest.raises(ValueError, match="has no option 'aug_smooth'"):
        explain(model, images, 3, method="saliency", aug_smooth=True)


# -- hooked(edit=) ---------------------------------------------------------------------------

def test_hooked_edit_replaces_the_output_and_leaves_no_hook(model, images):
    with hooked(model, ["layer2"], edit={"layer4": lambda out: torch.zeros_like(out)}) as got:
        with torch.no_grad():
            logits = model(images)
        assert set(got) == {"layer2", "layer4"} and got["layer4"].abs().amax() > 0
    torch.testing.assert_close(logits, model.fc.bias.expand(3, -1))  # GAP of zeros
    assert count_hooks(model) == 0

    def fail(output):
        raise RuntimeError("edit failed on purpose")

    with pytest.raises(RuntimeError, match="on purpose"), hooked(model, edit={"layer1": fail}):
        model(images)
    assert count_hooks(model) == 0
