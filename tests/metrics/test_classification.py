"""Average precision against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from loupe.metrics import average_precision, mean_average_precision


def test_ranked_list_by_hand():
    # ranks: + - + -  -> precisions at the positives 1/1 and 2/3
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    assert float(average_precision(scores, labels)[0]) == pytest.approx((1 + 2 / 3) / 2)


def test_order_of_rows_does_not_matter_and_perfect_ranking_gives_one():
    scores = torch.tensor([[0.1, 0.3], [0.9, 0.2], [0.4, 0.8]])
    labels = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    ap = average_precision(scores, labels)
    assert ap.tolist() == pytest.approx([1.0, 1.0])
    perm = torch.tensor([2, 0, 1])
    assert torch.equal(average_precision(scores[perm], labels[perm]), ap)


def test_worst_ranking_by_hand():
    # the single positive ranked last of 4: precision 1/4
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
    labels = torch.tensor([[0.0], [0.0], [0.0], [1.0]])
    assert float(average_precision(scores, labels)[0]) == pytest.approx(0.25)


def test_ties_are_one_threshold():
    # two positives and two negatives all tied: one threshold, precision 2/4
    scores = torch.full((4, 1), 0.5)
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    assert float(average_precision(scores, labels)[0]) == pytest.approx(0.5)
    # a tie between a positive and a negative below a clear positive:
    # thresholds 0.9 (P=1, R=1/2) then 0.5 (P=2/3, R=1) -> 1/2 * 1 + 1/2 * 2/3
    scores = torch.tensor([[0.9], [0.5], [0.5]])
    labels = torch.tensor([[1.0], [0.0], [1.0]])
    assert float(average_precision(scores, labels)[0]) == pytest.approx(0.5 + 1 / 3)


def test_class_without_positives_is_nan_and_left_out_of_the_mean():
    scores = torch.tensor([[0.9, 0.2], [0.1, 0.7]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    ap = average_precision(scores, labels)
    assert ap[0] == 1.0 and math.isnan(float(ap[1]))
    assert mean_average_precision(scores, labels) == 1.0


def test_against_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    scores = (torch.rand(40, 3, generator=g) * 5).round() / 5  # many ties
    labels = (torch.rand(40, 3, generator=g) < 0.4).float()
    for c in range(3):
        s, y = scores[:, c].tolist(), labels[:, c].tolist()
        total, previous_recall = 0.0, 0.0
        for threshold in sorted(set(s), reverse=True):
            chosen = [yi for si, yi in zip(s, y, strict=True) if si >= threshold]
            recall = sum(chosen) / sum(y)
            total += (recall - previous_recall) * sum(chosen) / len(chosen)
            previous_recall = recall
        assert float(average_precision(scores, labels)[c]) == pytest.approx(total)
