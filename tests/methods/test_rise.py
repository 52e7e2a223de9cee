"""RISE: the masks against OpenCV's bilinear resize, the maps against a per-mask loop of the
paper's formula and by hand on a linear model, batching, seeds and errors.

No installed library implements RISE, so the oracle is the formula itself,
``S_k = 1 / (N p) sum_m f_k(x * M_m) M_m``, written here one mask and one image at a time
on the same masks.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from loupe import explain
from loupe.methods.rise import rise_maps, rise_masks
from loupe.targets import resolve_targets
from tests.conftest import count_hooks
from tests.methods.test_cam_family import assert_agree
from tests.methods.test_occlusion import Weighted

TARGETS = [[3, 7], [5, 1]]


@pytest.fixture
def model(seeded_resnet18) -> torch.nn.Module:
    return seeded_resnet18


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("size", "cells"), [((32, 32), 4), ((30, 45), 7)])
def test_masks_are_the_papers_upsampled_shifted_grids(size, cells):
    """Each mask is its grid resized bilinearly to (s + 1) cells of ceil(side / s) pixels
    (OpenCV's INTER_LINEAR: half-pixel centres, edges replicated, as the authors' skimage
    resize with mode="reflect") and cropped at its shift."""
    masks = rise_masks(12, size, cells, 0.5, seed=3)
    built = masks[torch.arange(12)]
    assert built.shape == (12, *size)
    cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
    assert masks.cell == cell
    assert (masks.shifts[:, 0] < cell[0]).all() and (masks.shifts[:, 1] < cell[1]).all()
    for m in range(12):
        grid = masks.grids[m].numpy().astype(np.float32)
        up = cv2.resize(grid, ((cells + 1) * cell[1], (cells + 1) * cell[0]),
                        interpolation=cv2.INTER_LINEAR)
        dy, dx = masks.shifts[m].tolist()
        expected = torch.from_numpy(up[dy : dy + size[0], dx : dx + size[1]])
        torch.testing.assert_close(built[m], expected, rtol=0, atol=1e-5)


def test_masks_are_seeded_and_average_to_p():
    a, b = rise_masks(2000, (24, 24), 6, 0.3, seed=1), rise_masks(2000, (24, 24), 6, 0.3, seed=1)
    assert torch.equal(a.grids, b.grids) and torch.equal(a.shifts, b.shifts)
    assert not torch.equal(rise_masks(2000, (24, 24), 6, 0.3, seed=2).grids, a.grids)
    built = a[torch.arange(2000)]
    assert built.min() >= 0 and built.max() <= 1 + 1e-6  # bilinear weights round
    assert built.mean().item() == pytest.approx(0.3, abs=0.01)  # E[M] = p
    generated = rise_masks(5, (24, 24), 6, 0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(generated.grids, rise_masks(5, (24, 24), 6, 0.3, seed=1).grids)


def rise_by_loop(model, images, targets, masks, p) -> torch.Tensor:
    """The paper's formula, one image, mask and target at a time, with class probabilities."""
    n = masks.shape[0]
    maps = torch.zeros(len(targets), len(targets[0]), *images.shape[-2:])
    with torch.no_grad():
        for b, row in enumerate(targets):
            for m in range(n):
                probs = model(images[b : b + 1] * masks[m]).softmax(1)[0]
                for j, k in enumerate(row):
                    maps[b, j] += probs[k] * masks[m]
    return maps / (n * p)


def test_rise_matches_a_per_mask_loop_of_the_formula(model, images):
    ours = explain(model, images, TARGETS, method="rise", n_masks=24, cells=4, p=0.4,
                   seed=7, chunk_size=10)
    masks = rise_masks(24, (32, 32), 4, 0.4, seed=7)
    expected = rise_by_loop(model, images, TARGETS, masks[torch.arange(24)], 0.4)
    assert_agree(ours, expected)
    # other masks give other maps, beyond the tolerance
    other = explain(model, images, TARGETS, method="rise", n_masks=24, cells=4, p=0.4, seed=8)
    assert (other - expected).abs().amax() > 1e-2 * expected.abs().amax()
    assert count_hooks(model) == 0


def test_rise_by_hand_on_a_linear_model():
    """score_k = sum(w_k * x); two masks, p = 1/2: S = (f(x M1) M1 + f(x M2) M2) / (2 * 1/2)."""
    model = Weighted(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))
    x = torch.ones(1, 1, 2, 2)
    masks = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    targets = resolve_targets([[0]], 1, x.device)
    maps = rise_maps(model, x, targets, masks, 0.5, softmax=False)
    # f(x M1) = 1 + 2 = 3, f(x M2) = 2 + 4 = 6
    torch.testing.assert_close(maps[0, 0], torch.tensor([[3.0, 9.0], [0.0, 6.0]]))


def test_rise_batches_images_and_masks_and_scores_all_targets_per_forward():
    model = Weighted(torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model.forwards = 0
    maps = explain(model, x, [[0, 1, 2]] * 3, method="rise", n_masks=50, cells=3,
                   softmax=False, chunk_size=16)
    # masks are summed 256 at a time: one block of 50 masks x 3 images
    assert model.forwards == math.ceil(3 * 50 / 16)
    for b in range(3):
        alone = explain(model, x[b : b + 1], [[0, 1, 2]], method="rise", n_masks=50, cells=3,
                        softmax=False, chunk_size=5)
        torch.testing.assert_close(alone, maps[b : b + 1], rtol=1e-5, atol=1e-6)


def test_rise_score_functions_equal_class_targets_on_logits(model, images):
    by_class = explain(model, images, 2, method="rise", n_masks=16, cells=4, softmax=False)
    by_function = explain(model, images, lambda out: out[:, 2], method="rise", n_masks=16,
                          cells=4, chunk_size=7)
    torch.testing.assert_close(by_function, by_class)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_masks": 0}, "n_masks must be a positive integer, got 0"),
        ({"cells": 1.5}, "cells must be a positive integer, got 1.5"),
        ({"p": 0}, "p must be a probability in (0, 1], got 0"),
        ({"p": 1.5}, "p must be a probability in (0, 1], got 1.5"),
        ({"softmax": "yes"}, "softmax must be True or False, got 'yes'"),
        ({"chunk_size": -1}, "chunk_size must be a positive integer, got -1"),
        ({"seed": None}, "seed must be an int (or pass generator=), got None"),
    ],
)
def test_bad_options_are_clear_errors(model, images, options, message):
    with pytest.raises(ValueError) as error:
        explain(model, images, 1, method="rise", **{"n_masks": 4, **options})
    assert str(error.value) == message
    assert count_hooks(model) == 0
