"""Multi-label classification: average precision per class and its mean (mAP), as the
classifier's validation score."""

from __future__ import annotations

import torch


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision of each column, ``(N, C)`` scores and 0/1 labels -> ``(C,)`` float64.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order
    (the PASCAL/sklearn non-interpolated definition; tied scores form one threshold). NaN for
    a class without positives."""
    scores, labels = scores.double().T, labels.double().T  # (C, N)
    order = scores.argsort(dim=1, descending=True, stable=True)
    s = scores.gather(1, order)
    y = labels.gather(1, order)
    tp = y.cumsum(1)
    precision = tp / torch.arange(1, s.shape[1] + 1, dtype=s.dtype, device=s.device)
    # each item's precision is taken at the last item of its tie group
    ascending = (-s).contiguous()
    group_end = torch.searchsorted(ascending, ascending, right=True) - 1
    positives = y.sum(1)
    ap = (y * precision.gather(1, group_end)).sum(1) / positives
    return ap.where(positives > 0, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of :func:`average_precision` over the classes that have a positive."""
    ap = average_precision(scores, labels)
    return float(ap[~ap.isnan()].mean()) if (~ap.isnan()).any() else float("nan")
