"""Optional dense-CRF refinement of pseudo-masks (the ``crf`` extra: ``pydensecrf2``).

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NeurIPS 2011, with the label unary and parameters of IRN's
``imutils.crf_inference_label`` (Ahn et al., CVPR 2019): 10 mean-field steps, label
confidence 0.7, a Gaussian kernel (sxy 3, compat 3) and a bilateral kernel (sxy 50,
srgb 5, compat 10).
"""

from __future__ import annotations

import numpy as np
import torch

from loupe.masks.threshold import IGNORE


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_labels
    except ImportError as error:
        raise ImportError(
            "CRF refinement needs the optional package pydensecrf2; install it with "
            "`pip install 'loupe[crf]'` (or `pip install pydensecrf2`)"
        ) from error
    return dcrf, unary_from_labels


def crf_refine_mask(
    image: torch.Tensor,
    mask: torch.Tensor,
    *,
    t: int = 10,
    gt_prob: float = 0.7,
    scale_factor: float = 1.0,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 50.0,
    bilateral_srgb: float = 5.0,
    bilateral_compat: float = 10.0,
) -> torch.Tensor:
    """A mask refined by a dense CRF whose unary trusts each pixel's label with ``gt_prob``.

    The labels present in ``mask`` (255 excluded) become the CRF's states; pixels labelled
    255 get a uniform ("unsure") unary, so the CRF fills them in. Without 255 pixels this is
    exactly IRN's ``crf_inference_label(img, labels, t, n_labels, gt_prob)``. Spatial
    standard deviations are divided by ``scale_factor`` (for images rescaled by it).

    Args:
        image: ``(3, H, W)`` RGB, uint8 or float in [0, 1].
        mask: ``(H, W)`` integer labels (255 = unsure).

    Returns:
        ``(H, W)`` long mask on ``mask``'s device, labels taken from those in ``mask``.
    """
    dcrf, unary_from_labels = _densecrf()
    if image.dim() != 3 or image.shape[0] != 3 or mask.dim() != 2:
        raise ValueError(
            f"crf_refine_mask needs image (3, H, W) and mask (H, W), got "
            f"{tuple(image.shape)} and {tuple(mask.shape)}"
        )
    if image.shape[1:] != mask.shape:
        raise ValueError(
            f"image size {tuple(image.shape[1:])} differs from mask size {tuple(mask.shape)}"
        )
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob must lie in (0, 1), got {gt_prob}")
    labels = mask.long()
    keys = torch.unique(labels[labels != IGNORE])
    if keys.numel() <= 1:
        return labels.clone() if keys.numel() == 0 else torch.full_like(labels, int(keys[0]))

    # Compact labels 1..n (0 = unsure) for pydensecrf's zero_unsure convention.
    compact = torch.searchsorted(keys, labels.clamp(max=int(keys[-1]))) + 1
    compact = torch.where(labels == IGNORE, 0, compact).cpu().numpy()
    rgb = _rgb_uint8(image)
    height, width = mask.shape
    n = int(keys.numel())

    crf = dcrf.DenseCRF2D(width, height, n)
    crf.setUnaryEnergy(unary_from_labels(compact, n, gt_prob=gt_prob, zero_unsure=True))
    crf.addPairwiseGaussian(sxy=gaussian_sxy / scale_factor, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy / scale_factor, srgb=bilateral_srgb, rgbim=rgb, compat=bilateral_compat
    )
    q = np.array(crf.inference(t)).reshape(n, height, width)
    refined = torch.from_numpy(q.argmax(0)).to(mask.device)
    return keys[refined]


def _rgb_uint8(image: torch.Tensor) -> np.ndarray:
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round()
    return np.ascontiguousarray(image.to(device="cpu", dtype=torch.uint8).permute(1, 2, 0).numpy())
