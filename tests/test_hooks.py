"""``loupe.hooks.hooked``: the state it sets inside the block and restores after it."""

from __future__ import annotations

import torch
from torch import nn

from loupe.hooks import hooked


def _tangled() -> nn.Sequential:
    """Train mode except one frozen, eval-mode block, and a layer shared by two parents."""
    shared = nn.Linear(4, 4)
    inner = nn.Sequential(nn.Linear(4, 4), shared)
    model = nn.Sequential(nn.Linear(4, 4), inner, shared, nn.Sequential(nn.Linear(4, 4)))
    model[3].eval()
    model[3][0].weight.requires_grad_(False)
    return model


def _flags(model: nn.Module) -> tuple[list[bool], list[bool]]:
    return ([m.training for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def test_eval_and_frozen_inside_restored_after_with_a_shared_layer():
    model = _tangled()
    before = _flags(model)
    assert any(before[0]) and not all(before[0]) and not all(before[1])
    with hooked(model):
        training, trainable = _flags(model)
        assert not any(training) and not any(trainable)
    assert _flags(model) == before


def test_freeze_false_leaves_the_parameter_flags_alone():
    model = _tangled()
    before = _flags(model)
    with hooked(model, freeze=False):
        training, trainable = _flags(model)
        assert not any(training) and trainable == before[1]
    assert _flags(model) == before


def test_restored_when_the_block_raises():
    model = _tangled()
    before = _flags(model)
    try:
        with hooked(model):
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert _flags(model) == before
    assert torch.is_grad_enabled()
