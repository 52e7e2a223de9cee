"""A frozen TorchScript copy for the input-gradient passes that computes, bit for bit, what the
model computes: the forward + backward of saliency, gradient x input, SmoothGrad, Integrated
Gradients and shuffle saliency in a :func:`loupe.explainer` block, without Python's call per
module.

Input gradients are discontinuous where a ReLU's input or a max-pool's window is within float
rounding of a tie, so a copy that folds BatchNorm into the convolutions (the other copies,
:mod:`loupe._frozen`, :mod:`loupe._frozen_layer`) would move some of those decisions and change
a map by up to 2% of its largest value at a few pixels (docs/speed.md, "Frozen forwards").
This copy is frozen with ``optimize_numerics=False``: every BatchNorm, ReLU and convolution
stays the ATen call the model makes, in the model's order, so the forward is the model's bit
for bit and every such decision is the model's. What it saves is the interpreter's work per
module: forward + input-gradient CPU time, model / copy, one thread, random weights
(``bench/frozen_gradient.py``; docs/speed.md, tenth follow-up): resnet18 1.03x at 64x64
(batch 1), 1.06x (batch 4), 1.04x at 224x224; resnet50 1.04x, MobileNetV2 1.07x at 224x224;
DenseNet-121 1.16x at 64x64; the saving is per call, so it fades with the work per call:
eight 224x224 images, resnet18 1.03x, resnet50 1.00x [0.98, 1.06]. Outputs and gradients were
equal to the model's bit for bit in every case measured.

It is used only in an explainer block (building it costs 0.3-3.5 s, paid once per model by the
block's first call), on the CPU, without CPU autocast, for an eval-mode model with no hooks at
all that TorchScript can compile and whose output is one tensor, while its parameters and
buffers are the ones it was frozen from; and on each new input shape, only when its output on
two rows equals the model's bit for bit (else the model runs that shape). The copy's parameters
need no gradient (only the input's is taken). ``LOUPE_FROZEN_FORWARD=0`` turns it off.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn

from loupe._frozen import FrozenCopy, checked_copy, may_freeze, model_state, without_hooks

Forward = Callable[[torch.Tensor], object]

_COPIES: weakref.WeakKeyDictionary[nn.Module, FrozenCopy] = weakref.WeakKeyDictionary()


def gradient_forward(model: nn.Module, repeated: bool) -> Forward:
    """The forward for the input-gradient passes of one call: ``model`` itself outside an
    explainer block (``repeated`` False), else a function that runs each input through the
    copy of the module docstring where it may, and through ``model`` where it may not."""
    if not repeated:
        return model

    def forward(x: torch.Tensor) -> object:
        copied = gradient_copy(model, x)
        return model(x) if copied is None else copied(x)

    return forward


def gradient_copy(model: nn.Module, example: torch.Tensor) -> Forward | None:
    """The copy's guarded forward for inputs shaped like ``example``, or None where the model
    is to run (module docstring)."""
    if not may_freeze(model, example, gradients=True):
        return None
    state = model_state(model, gradients=True)
    if state is None:
        return None

    def reference(x: torch.Tensor) -> torch.Tensor | None:
        output = model(x)
        return output if isinstance(output, torch.Tensor) else None

    with torch.no_grad():  # the check's forwards record nothing
        return checked_copy(_COPIES, model, state, example, reference,
                            lambda: _frozen_keeping_numerics(model), model, exact=True)


def _frozen_keeping_numerics(model: nn.Module) -> torch.jit.ScriptModule | None:
    """``model`` scripted and frozen without the passes that change numerics (no BatchNorm
    folding), its parameters needing no gradient; None where that fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation warnings
            clone = without_hooks(model).requires_grad_(False).eval()
            return torch.jit.freeze(torch.jit.script(clone), optimize_numerics=False)
    except Exception:  # noqa: BLE001 - a model that cannot be scripted runs itself
        return None
