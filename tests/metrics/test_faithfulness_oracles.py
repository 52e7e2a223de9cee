"""Faithfulness metrics against the peers with matched settings: torch-cam's
DeletionInsertionMetric and ClassificationMetric, pytorch-grad-cam's ROAD (noise-free imputer,
so both are deterministic) and confidence metrics."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

from loupe.methods.shuffle import gaussian_blur
from loupe.metrics.faithfulness import (
    confidence_change,
    deletion_curves,
    insertion_curves,
    linear_imputation,
    road,
)
from tests.metrics.faith_models import distinct_maps, images, tiny_cnn

softmax = partial(torch.softmax, dim=-1)


class FixedMaps:
    """A torch-cam CAM extractor that returns given maps, so both sides score the same maps."""

    def __init__(self, model: torch.nn.Module, maps: torch.Tensor) -> None:
        self.model = model
        self.maps = maps

    def __call__(self, class_idx=None, scores=None, normalized=True, *, targets=None, **kw):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return nullcontext()


@pytest.fixture(scope="module")
def setup():
    model = tiny_cnn()
    x = images(3, 40)
    maps = distinct_maps(3, 40)
    with torch.no_grad():
        top1 = model(x).argmax(1)
    return model, x, maps, top1


def _torchcam_per_image(metric_class, model, x, maps, **kwargs):
    out = []
    for i in range(len(x)):
        metric = metric_class(FixedMaps(model, maps[i:i + 1]), softmax, **kwargs)
        metric.update(x[i:i + 1])
        out.append(metric.summary())
    return out


@pytest.mark.parametrize("steps", [20, 7])
def test_deletion_insertion_match_torchcam_zero_baseline(setup, steps):
    model, x, maps, _ = setup
    expected = _torchcam_per_image(DeletionInsertionMetric, model, x, maps, steps=steps)
    deletion = deletion_curves(model, x, maps, steps=steps, baseline=0.0, chunk_size=5)
    insertion = insertion_curves(model, x, maps, steps=steps, baseline=0.0, chunk_size=5)
    torch.testing.assert_close(
        deletion.auc[:, 0], torch.tensor([e["deletion_auc"] for e in expected]),
        rtol=1e-5, atol=1e-7,
    )
    torch.testing.assert_close(
        insertion.auc[:, 0], torch.tensor([e["insertion_auc"] for e in expected]),
        rtol=1e-5, atol=1e-7,
    )
    # the curves are not flat: the comparison is not vacuous
    assert (deletion.scores.amax(-1) - deletion.scores.amin(-1)).min() > 1e-3


def test_insertion_from_blur_matches_torchcam_with_the_same_baseline(setup):
    model, x, maps, _ = setup
    blurred = gaussian_blur(x, 5.0)
    expected = []
    for i in range(len(x)):
        metric = DeletionInsertionMetric(FixedMaps(model, maps[i:i + 1]), softmax,
                                         baseline=blurred[i:i + 1])
        metric.update(x[i:i + 1])
        expected.append(metric.summary()["insertion_auc"])
    insertion = insertion_curves(model, x, maps, baseline="blur", blur_sigma=5.0)
    torch.testing.assert_close(insertion.auc[:, 0], torch.tensor(expected), rtol=1e-5, atol=1e-7)


def test_average_drop_and_increase_match_torchcam(setup):
    model, x, maps, _ = setup
    expected = _torchcam_per_image(ClassificationMetric, model, x, maps)
    change = confidence_change(model, x, maps)
    torch.testing.assert_close(
        change.average_drop[:, 0], torch.tensor([e["avg_drop"] for e in expected]),
        rtol=1e-5, atol=1e-6,
    )
    assert change.increase_in_confidence[:, 0].tolist() == [e["conf_increase"] for e in expected]


def test_confidence_change_matches_pytorch_grad_cam(setup):
    model, x, maps, top1 = setup
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in top1]
    cams = maps.numpy().astype(np.float32)
    drop = DropInConfidence()(x, cams, targets, model)
    increase = IncreaseInConfidence()(x, cams, targets, model)
    change = confidence_change(model, x, maps)
    ours_drop = (change.clean - change.explained).clamp(min=0)[:, 0]
    torch.testing.assert_close(ours_drop, torch.from_numpy(drop), rtol=1e-5, atol=1e-7)
    assert change.increase_in_confidence[:, 0].tolist() == increase.tolist()
    assert ours_drop.max() > 1e-3


def _grad_cam_road(model, x, maps, targets, remover, percentile):
    imputer = NoisyLinearImputer(noise=0.0)
    metric = PerturbationConfidenceMetric(remover(percentile, imputer))
    return metric(x, maps.numpy().astype(np.float32), targets, model, return_diff=False)


def test_road_matches_pytorch_grad_cam_noise_free(setup):
    """grad-cam's ROADMostRelevantFirst(q) removes the top (100 - q)% (its threshold rule
    removes exactly 1600 * (1 - q/100) pixels of these 40x40 tie-free maps)."""
    model, x, maps, top1 = setup
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in top1]
    ours = road(model, x, maps, noise=0.0, fractions=(0.2, 0.5, 0.9), chunk_size=4)
    for j, fraction in enumerate((0.2, 0.5, 0.9)):
        q = round(100 * (1 - fraction))
        morf = _grad_cam_road(model, x, maps, targets, RemoveMostRelevantFirst, q)
        lerf = _grad_cam_road(model, x, maps, targets, RemoveLeastRelevantFirst, q)
        torch.testing.assert_close(ours.morf[:, 0, j], torch.from_numpy(morf), rtol=1e-4,
                                   atol=1e-6)
        torch.testing.assert_close(ours.lerf[:, 0, j], torch.from_numpy(lerf), rtol=1e-4,
                                   atol=1e-6)
    assert (ours.lerf - ours.morf).abs().max() > 1e-3


def test_road_combined_matches_pytorch_grad_cam_averagers(setup):
    model, x, maps, top1 = setup
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in top1]
    cams = maps.numpy().astype(np.float32)

    def averager(remover):
        def metric(percentile):
            return PerturbationConfidenceMetric(remover(percentile, NoisyLinearImputer(noise=0)))
        return AveragerAcrossThresholds(metric)(x, cams, targets, model)

    combined = (averager(RemoveLeastRelevantFirst) - averager(RemoveMostRelevantFirst)) / 2
    ours = road(model, x, maps, noise=0.0)
    torch.testing.assert_close(ours.combined[:, 0], torch.from_numpy(combined), rtol=1e-4,
                               atol=1e-6)


@pytest.mark.parametrize(
    ("fraction", "height", "width"), [(0.1, 24, 24), (0.6, 23, 37), (0.95, 24, 24)]
)
def test_linear_imputation_matches_grad_cam_sparse_solve(fraction, height, width):
    """Scattered holes, odd sizes (the multigrid pads to even sizes)."""
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(int(fraction * 100))
    removed = torch.rand(2, height, width, generator=generator) < fraction
    _check_against_scipy(x, removed)


def test_linear_imputation_of_large_holes_matches_grad_cam():
    """One big hole (MoRF of a blob map at 90%) and its complement, 96x96: where plain
    conjugate gradients needs hundreds of iterations."""
    maps = distinct_maps(1, 96, seed=6)[0]
    removed = torch.stack([maps >= 0.1, maps < 0.9])
    _check_against_scipy(images(2, 96, seed=7), removed)


def _check_against_scipy(x: torch.Tensor, removed: torch.Tensor) -> None:
    ours = linear_imputation(x, removed)
    for i in range(len(x)):
        expected = NoisyLinearImputer(noise=0.0)(x[i], (~removed[i]).float())
        torch.testing.assert_close(ours[i], expected, rtol=1e-5, atol=5e-5)
    kept = ~removed[:, None].expand_as(x)
    assert torch.equal(ours[kept], x[kept])
