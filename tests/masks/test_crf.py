"""Dense-CRF refinement (optional extra pydensecrf2)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from loupe.masks.crf import crf_refine_mask


def two_colour_scene(size: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image: red left half, blue right half (with mild noise); true mask: 5 left, 0 right."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(3, size, size)
    image[0, :, : size // 2] = 0.8
    image[2, :, size // 2 :] = 0.8
    image = (image + 0.03 * torch.randn(image.shape, generator=generator)).clamp(0, 1)
    truth = torch.zeros(size, size, dtype=torch.long)
    truth[:, : size // 2] = 5
    return image, truth


def flip_labels(truth: torch.Tensor, fraction: float, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    flip = torch.rand(truth.shape, generator=generator) < fraction
    return torch.where(flip, 5 - truth, truth)  # 5 <-> 0


def irn_crf_inference_label(img, labels, t=10, n_labels=21, gt_prob=0.7):
    """IRN's misc/imutils.crf_inference_label, as published (zero_unsure=False)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(img)), compat=10)
    q = d.inference(t)
    return np.argmax(np.array(q).reshape((n_labels, h, w)), axis=0)


def test_equals_irn_crf_inference_label():
    pytest.importorskip("pydensecrf", reason="optional extra pydensecrf2 is not installed")
    image, truth = two_colour_scene()
    noisy = flip_labels(truth, 0.2)
    ours = crf_refine_mask(image, noisy)
    rgb = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    compact = (noisy == 5).long().numpy()  # keys [0, 5] -> indices 0, 1
    expected = np.array([0, 5])[irn_crf_inference_label(rgb, compact, n_labels=2)]
    np.testing.assert_array_equal(ours.numpy(), expected)


def test_cleans_label_noise_along_colour_edges():
    pytest.importorskip("pydensecrf", reason="optional extra pydensecrf2 is not installed")
    image, truth = two_colour_scene()
    noisy = flip_labels(truth, 0.25)
    refined = crf_refine_mask(image, noisy)
    before = (noisy == truth).double().mean()
    after = (refined == truth).double().mean()
    assert before < 0.8 and after > 0.97
    assert set(refined.unique().tolist()) <= {0, 5}


def test_unsure_pixels_are_filled_in():
    pytest.importorskip("pydensecrf", reason="optional extra pydensecrf2 is not installed")
    image, truth = two_colour_scene()
    mask = truth.clone()
    mask[:, 15:25] = 255  # a band of "unsure" pixels across the colour edge
    refined = crf_refine_mask(image, mask)
    assert not (refined == 255).any()
    assert (refined == truth).double().mean() > 0.95


def test_single_label_needs_no_crf():
    pytest.importorskip("pydensecrf", reason="optional extra pydensecrf2 is not installed")
    image, _ = two_colour_scene(8)
    mask = torch.full((8, 8), 3)
    mask[0, 0] = 255
    assert crf_refine_mask(image, mask).eq(3).all()
    all_unsure = torch.full((8, 8), 255)
    assert torch.equal(crf_refine_mask(image, all_unsure), all_unsure)


def test_missing_package_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    image, truth = two_colour_scene(8)
    with pytest.raises(ImportError, match="pydensecrf2"):
        crf_refine_mask(image, truth)


def test_shape_errors():
    pytest.importorskip("pydensecrf", reason="optional extra pydensecrf2 is not installed")
    image, truth = two_colour_scene(8)
    with pytest.raises(ValueError, match="image size"):
        crf_refine_mask(image, truth[:4])
    with pytest.raises(ValueError, match=r"image \(3, H, W\)"):
        crf_refine_mask(image[:2], truth)
