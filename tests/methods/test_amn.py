"""The ``amn`` method: softmax probabilities of the label-conditioned network, by hand on a
stub with fixed logits; the label vector each image gets; its errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from loupe import explain
from loupe.methods.amn import amn_maps, label_vectors
from loupe.targets import TargetError


class StubAMN(nn.Module):
    """A label-conditioned model with fixed outputs: per-pixel logits ``(B, 4, 2, 2)``
    (background + 3 classes) and image-level logits ``(B, 3)``; records the labels."""

    label_conditioned = True
    num_classes = 3

    def __init__(self, logits: torch.Tensor, scores: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.logits, self.scores = logits, scores
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        if labels is None:
            return self.scores[: images.shape[0]] * self.scale
        self.seen.append(labels.clone())
        return self.logits[: images.shape[0]] * self.scale


LOGITS = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]],
                        [[1.0, 0.0], [0.5, 0.5]],
                        [[-1.0, 2.0], [0.0, 3.0]],
                        [[0.5, 0.5], [1.0, 0.0]]]]).repeat(2, 1, 1, 1)
SCORES = torch.tensor([[0.1, 0.9, 0.3], [2.0, -1.0, 0.0]])


def _softmax_by_hand(i: int, j: int, channel: int) -> float:
    values = [float(LOGITS[0, c, i, j]) for c in range(4)]
    return math.exp(values[channel]) / sum(math.exp(v) for v in values)


def test_maps_are_the_softmax_probabilities_of_the_targets():
    model = StubAMN(LOGITS, SCORES)
    images = torch.zeros(2, 3, 2, 2)
    targets = [[2, 0], [1, -1]]
    raw = explain(model, images, targets, method="amn", upsample=False, min_max=False)
    assert raw.shape == (2, 2, 2, 2)
    for i in range(2):
        for j in range(2):
            assert float(raw[0, 0, i, j]) == pytest.approx(_softmax_by_hand(i, j, 3))
            assert float(raw[0, 1, i, j]) == pytest.approx(_softmax_by_hand(i, j, 1))
            assert float(raw[1, 0, i, j]) == pytest.approx(_softmax_by_hand(i, j, 2))
    assert torch.count_nonzero(raw[1, 1]) == 0  # padding
    # each image's label vector is the union of its targets
    assert torch.equal(model.seen[-1], torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    # by default each map is min-max normalised over the image (make_amn_cam.py)
    maps = explain(model, images, targets, method="amn", upsample=False)
    values = [_softmax_by_hand(i, j, 3) for i in range(2) for j in range(2)]
    low, high = min(values), max(values)
    assert float(maps[0, 0, 1, 1]) == pytest.approx((values[3] - low) / (high - low))
    assert float(maps[0, 0].min()) == 0.0 and float(maps[0, 0].max()) == pytest.approx(1.0)
    assert torch.count_nonzero(maps[1, 1]) == 0


def test_without_targets_the_classifier_top1_is_explained_and_is_the_label():
    model = StubAMN(LOGITS, SCORES)
    maps = explain(model, torch.zeros(2, 3, 2, 2), method="amn", upsample=False,
                   min_max=False)
    assert torch.equal(model.seen[-1], torch.tensor([[0.0, 1, 0], [1, 0, 0]]))
    assert float(maps[0, 0, 1, 0]) == pytest.approx(_softmax_by_hand(1, 0, 2))
    assert float(maps[1, 0, 1, 0]) == pytest.approx(_softmax_by_hand(1, 0, 1))


def test_functional_core():
    assert torch.equal(label_vectors(torch.tensor([[2, 2, -1], [-1, -1, -1]]), 3),
                       torch.tensor([[0.0, 0, 1], [0, 0, 0]]))
    assert label_vectors(torch.zeros(2, 0, dtype=torch.long), 3).shape == (2, 3)
    maps = amn_maps(LOGITS, torch.tensor([[0], [2]]), min_max=False)
    probabilities = torch.softmax(LOGITS, 1)
    torch.testing.assert_close(maps[:, 0], torch.stack([probabilities[0, 1], probabilities[1, 3]]))


def test_errors_are_clear():
    images = torch.zeros(2, 3, 2, 2)
    with pytest.raises(ValueError, match="method 'amn' explains an AMN run"):
        explain(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(8, 3)), images,
                0, method="amn")
    model = StubAMN(LOGITS, SCORES)
    with pytest.raises(TargetError, match="target class 3 is out of range for a model with 3"):
        explain(model, images, [[3], [0]], method="amn")
    with pytest.raises(ValueError, match="score-function targets are not supported"):
        explain(model, images, lambda output: output[:, 0], method="amn")
