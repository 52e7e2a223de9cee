"""Optimiser and learning-rate schedule of the WSSS recipe: SGD with a 10x learning rate on
the newly initialised head and polynomial decay ``lr * (1 - step / max_steps) ** power``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def poly_factor(step: int, max_steps: int, power: float = 0.9) -> float:
    """The polynomial decay factor ``(1 - step / max_steps) ** power``, 0 past the end."""
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    return max(0.0, 1.0 - step / max_steps) ** power


def split_parameters(
    model: nn.Module, head: str
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters of ``model`` split into (backbone, head), the head being the
    submodule named ``head`` (e.g. ``"fc"``, ``"classifier"``); frozen parameters are left
    out. A ValueError when no trainable parameter belongs to the head."""
    backbone, head_params = [], []
    prefix = head + "."
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (head_params if name.startswith(prefix) else backbone).append(parameter)
    if not head_params:
        raise ValueError(f"no trainable parameter under the head module {head!r}")
    return backbone, head_params


def sgd_with_head_lr(
    groups: tuple[Iterable[nn.Parameter], Iterable[nn.Parameter]], lr: float,
    head_lr_mult: float = 10.0, momentum: float = 0.9, weight_decay: float = 1e-4,
) -> torch.optim.SGD:
    """SGD over (backbone, head) parameter groups, the head at ``lr * head_lr_mult``."""
    backbone, head = groups
    param_groups = [{"params": list(head), "lr": lr * head_lr_mult}]
    backbone = list(backbone)
    if backbone:
        param_groups.insert(0, {"params": backbone, "lr": lr})
    return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def poly_schedule(
    optimizer: torch.optim.Optimizer, max_steps: int, power: float = 0.9
) -> LambdaLR:
    """Per-step polynomial decay of every group's initial learning rate."""
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    return LambdaLR(optimizer, lambda step: poly_factor(step, max_steps, power))
