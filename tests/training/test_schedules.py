"""Poly decay, parameter groups with the 10x head, and the optimiser they make."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loupe.training.schedules import (
    poly_factor,
    poly_schedule,
    sgd_with_head_lr,
    split_parameters,
)


def test_poly_factor_by_hand():
    assert poly_factor(0, 10) == 1.0
    assert poly_factor(5, 10, power=1.0) == pytest.approx(0.5)
    assert poly_factor(5, 10, power=0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(10, 10) == 0.0
    assert poly_factor(12, 10) == 0.0
    with pytest.raises(ValueError, match="max_steps"):
        poly_factor(1, 0)


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))


def test_head_gets_ten_times_the_learning_rate_and_frozen_parameters_are_left_out():
    model = _model()
    model[0].bias.requires_grad_(False)
    backbone, head = split_parameters(model, "2")
    assert [p.shape for p in backbone] == [model[0].weight.shape]
    assert {id(p) for p in head} == {id(model[2].weight), id(model[2].bias)}
    optimizer = sgd_with_head_lr((backbone, head), lr=0.01, head_lr_mult=10)
    lrs = [group["lr"] for group in optimizer.param_groups]
    assert lrs == pytest.approx([0.01, 0.1])
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_unknown_head_is_an_error():
    with pytest.raises(ValueError, match="'fc'"):
        split_parameters(_model(), "fc")


def test_schedule_decays_every_group_per_step():
    model = _model()
    optimizer = sgd_with_head_lr(split_parameters(model, "2"), lr=0.01)
    scheduler = poly_schedule(optimizer, max_steps=4, power=1.0)
    seen = []
    for _ in range(4):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    expected = [[0.01 * f, 0.1 * f] for f in (1.0, 0.75, 0.5, 0.25)]
    assert torch.allclose(torch.tensor(seen), torch.tensor(expected))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
