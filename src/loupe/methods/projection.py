"""Principal-component maps: the functional core of EigenCAM, KPCA-CAM and ``eigen_smooth``.

A layer's activation ``(C, h, w)`` is read as ``h*w`` points in ``R^C`` (one per position),
centred over the positions; a map is each point's coordinate on the first principal axis.
The sign of a principal axis is arbitrary (``v`` and ``-v`` are both eigenvectors): loupe makes
the value of largest magnitude positive, the rule of Seg-Eigen-CAM (Chung & Ying, Appl. Sci.
2025, Eq. 13) and of scikit-learn's ``svd_flip`` (so KPCA-CAM agrees with pytorch-grad-cam's
``KPCA_CAM`` as it is); pytorch-grad-cam's ``get_2d_projection`` leaves the sign to numpy's SVD.
"""

from __future__ import annotations

import torch


def positive_peak(projections: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` projections with each row's sign chosen so that its entry of largest
    magnitude is positive (the first such entry on ties; an all-zero row stays zero)."""
    peak = projections.gather(1, projections.abs().argmax(1, keepdim=True))
    return projections * torch.where(peak < 0, -1.0, 1.0).to(projections.dtype)


def first_component(activations: torch.Tensor) -> torch.Tensor:
    """``(..., C, h, w)`` -> ``(..., h, w)``: ``X_c v_1``, the positions' coordinates on the
    first principal axis (EigenCAM, Muhammad & Yeasin, IJCNN 2020).

    ``X`` is the ``(h*w, C)`` matrix of one map's activations, ``X_c`` it centred over positions
    (column means removed), ``v_1`` the top right singular vector of ``X_c``; NaN count as 0
    (as pytorch-grad-cam's ``get_2d_projection``). ``v_1`` is the top eigenvector of the
    smaller Gram matrix, ``X_c X_c^T`` or ``X_c^T X_c``, computed in float64; the sign follows
    :func:`positive_peak`. Float32 result.
    """
    *lead, c, h, w = activations.shape
    points = torch.nan_to_num(activations.reshape(-1, c, h * w).transpose(1, 2).double())
    centred = points - points.mean(1, keepdim=True)  # (N, hw, C)
    if h * w <= c:
        values, vectors = torch.linalg.eigh(centred @ centred.transpose(1, 2))  # (N, hw, hw)
        projection = vectors[..., -1] * values[..., -1:].clamp(min=0).sqrt()
    else:
        _, vectors = torch.linalg.eigh(centred.transpose(1, 2) @ centred)  # (N, C, C)
        projection = (centred @ vectors[..., -1:])[..., 0]
    return positive_peak(projection).float().reshape(*lead, h, w)


def channel_maps(weighted: torch.Tensor, eigen_smooth: bool = False, *,
                 counterfactual: bool = False) -> torch.Tensor:
    """``(B, K, C, h, w)`` weighted activations ``w_c A_c`` -> ``(B, K, h, w)`` maps
    ``ReLU(sum_c w_c A_c)``, or with ``eigen_smooth`` ``ReLU(first_component(w A))``, the
    first principal component of the weighted activations (pytorch-grad-cam's
    ``eigen_smooth``). A principal component's sign is fixed by its peak, so it ignores the
    sign of the weights: ``counterfactual`` (weights from ``-S``, checked here) would change
    nothing and is refused with ``eigen_smooth``."""
    if not isinstance(eigen_smooth, bool):
        raise ValueError(f"eigen_smooth must be True or False, got {eigen_smooth!r}")
    if eigen_smooth and counterfactual:
        raise ValueError("counterfactual has no effect with eigen_smooth (the principal "
                         "component's sign is fixed by its peak); use one or the other")
    combined = first_component(weighted) if eigen_smooth else weighted.sum(2)
    return combined.clamp(min=0)
