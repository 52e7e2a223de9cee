"""A faster forward for the passes that need no gradient: a frozen TorchScript copy of the model.

Score-CAM and its variants, RISE, Occlusion and the faithfulness metrics push hundreds of
perturbed copies of each image through the model under ``torch.no_grad``. On the CPU,
``torch.jit.freeze`` + ``torch.jit.optimize_for_inference`` of an eval-mode model folds each
BatchNorm into its convolution, fuses the activations and keeps the weights prepacked for
oneDNN, which makes those forwards faster: model / copy CPU time, one thread, random weights,
batch 4 at 224x224 (bench/frozen_forward.py; docs/speed.md, "Frozen forwards"): resnet18
1.36x (1.32x at 64x64, batch 16), resnet50 1.63x, MobileNetV2 2.46x, EfficientNet-B0 1.33x,
DenseNet-121 1.37x. The outputs agree with the model's to float rounding (largest relative
difference of the logits 2e-7 to 1e-6 there).

:func:`inference_forward` gives that copy where it is safe and exact, and the model itself
everywhere else. The copy is used only when all of these hold, so that it computes what the
model computes:

- the inputs are on the CPU (on CUDA the gain is unmeasured), gradients are off and CPU
  autocast is off (the model runs bfloat16 under it);
- the model has BatchNorm layers: folding them into their convolutions and oneDNN's
  prepacked convolutions is where the gain is; models without gain nothing or lose (ConvNeXt
  0.95x, ViT-B/16 1.00x) and run as they are;
- the parameters and buffers keep version counters (a model made under
  ``torch.inference_mode`` does not, so a change to its weights could not be seen);
- every module of the model is in eval mode and no module has hooks (a scripted copy would
  skip them) other than loupe's own capturing hooks, which under no_grad only record a
  layer's output (the methods read the activation of the clean images before scoring the
  copies), and no global module hooks are set;
- the model can be scripted (``torch.jit.script``: models with Python-only forwards are
  not, and keep their own forward) and returns one tensor;
- on each new input shape, the copy's output on two rows agrees with the model's
  (``torch.allclose``, relative 1e-3, absolute 1e-4 of the largest output); a shape on which
  it disagrees, or on which it raises, runs through the model from then on.

A frozen copy is kept per model, in a weak dictionary (gone with the model), as long as the
model's parameters and buffers are the same tensors at the same versions (an optimiser step
or ``load_state_dict`` makes a new copy). A model that cannot be frozen is not tried again.
Freezing costs 0.4-4.4 s (resnet18 to DenseNet-121), paid by the first call that uses the
copy; only a call that runs at least :data:`FROZEN_MIN_ROWS` rows, or a call of an explainer
block (Occlusion's 49 windows of one 64x64 image), uses it (whether an earlier call made one or
not: the same call always takes the same way).
Setting the environment variable ``LOUPE_FROZEN_FORWARD=0`` turns it off; do so for a model
whose forward has side effects a caller relies on (a counter of calls in an attribute, say):
the copy has them on itself, not on the model.
"""

from __future__ import annotations

import copy
import itertools
import os
import warnings
import weakref
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

FROZEN_MIN_ROWS = 64  # fewer rows than this run through the model itself
FROZEN_ENV = "LOUPE_FROZEN_FORWARD"
CHECK_ROWS = 2
CHECK_RTOL = 1e-3
CHECK_ATOL = 1e-4  # of the largest absolute output
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")

Forward = Callable[[torch.Tensor], object]


@dataclass
class FrozenCopy:
    """What is known of one model: its state when frozen, the copy (None: it could not be
    frozen) and, per input shape and dtype, whether the copy may run it (it agreed with the
    model, and has not raised on it)."""

    state: tuple[tuple[int, int, int], ...]
    module: torch.jit.ScriptModule | None
    shapes: dict[tuple[object, ...], bool] = field(default_factory=dict)


_COPIES: weakref.WeakKeyDictionary[nn.Module, FrozenCopy] = weakref.WeakKeyDictionary()


def inference_forward(model: nn.Module, example: torch.Tensor, rows: int,
                      repeated: bool = False) -> Forward:
    """The forward to use for ``rows`` no-grad rows shaped like ``example`` ``(n, C, H, W)``:
    a frozen copy of ``model`` where the module docstring's conditions hold, else ``model``.
    ``repeated``: the call is one of a :func:`loupe.explainer` block's, which uses the copy
    for fewer than :data:`FROZEN_MIN_ROWS` rows too (the block pays for freezing once).

    The choice depends on the call alone (the model, its state, the input's shape, ``rows``
    and ``repeated``), never on earlier calls, so a re-run computes what the first run did;
    maps never depend on it beyond float rounding."""
    if (rows < FROZEN_MIN_ROWS and not repeated) or not may_freeze(model, example):
        return model
    state = model_state(model)
    if state is None:
        return model

    def reference(x: torch.Tensor) -> torch.Tensor | None:
        # a model whose output is no tensor (a dict, a HuggingFace output) is not frozen at all
        output = model(x)
        return output if isinstance(output, torch.Tensor) else None

    forward = checked_copy(_COPIES, model, state, example, reference, lambda: _frozen(model),
                           model)
    return model if forward is None else forward


def checked_copy(copies: MutableMapping[Any, FrozenCopy], name: object,
                 state: tuple[tuple[int, int, int], ...], example: torch.Tensor,
                 reference: Callable[[torch.Tensor], object | None],
                 build: Callable[[], torch.jit.ScriptModule | None],
                 fallback: Forward, exact: bool = False) -> Forward | None:
    """The guarded forward of the copy kept as ``copies[name]`` for inputs shaped like
    ``example``, or None where there is none to use.

    The copy is made (``build``) when there is none yet or the model's ``state`` changed since
    (a copy that could not be made is not tried again while the state holds), unless
    ``reference``, the model's outputs on a few rows, is None (nothing a copy could return). On
    each new input shape the copy's outputs on :data:`CHECK_ROWS` rows of ``example`` must be
    the reference's (:func:`_close_enough`, each of a tuple; with ``exact``, bit for bit);
    should the copy raise later, ``fallback`` runs the input and that shape is not given to
    the copy again."""
    rows = example[:CHECK_ROWS]
    known = copies.get(name)
    expected = None
    if known is None or (known.module is not None and known.state != state):
        expected = reference(rows)
        module = build() if expected is not None else None
        known = copies[name] = FrozenCopy(state, module)
    if known.module is None:
        return None
    key = (tuple(example.shape[1:]), example.dtype)
    if key not in known.shapes:
        if expected is None:
            expected = reference(rows)
        known.shapes[key] = expected is not None and _agrees(known.module, expected, rows,
                                                             exact)
    return _guarded(known, key, fallback) if known.shapes[key] else None


def may_freeze(model: nn.Module, example: torch.Tensor, gradients: bool = False) -> bool:
    """The conditions of the module docstring that need no walk over the model's modules
    (those are :func:`model_state`'s); ``gradients``: for a copy that keeps autograd
    (:mod:`loupe._frozen_grad`), which may run with gradients on."""
    if os.environ.get(FROZEN_ENV, "1").strip() == "0":
        return False
    if example.device.type != "cpu" or (torch.is_grad_enabled() and not gradients):
        return False
    if torch.is_autocast_enabled("cpu"):  # the model runs bfloat16 there: no copy is trusted
        return False
    return not isinstance(model, torch.jit.ScriptModule) and not _global_hooks()


def _global_hooks() -> bool:
    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    return any(getattr(module_hooks, name, None) for name in names)


def model_state(model: nn.Module, gradients: bool = False
                ) -> tuple[tuple[int, int, int], ...] | None:
    """Each parameter and buffer's identity, storage and version, in one walk over the
    modules (it runs on every call that may use a copy: about 80 us on a resnet18, against
    460 us for ``model.modules()``, ``parameters()`` and ``buffers()``); None where the model
    may not be frozen: a module in training mode or with a hook other than loupe's own
    capturing ones, no BatchNorm, or an inference tensor (made under
    ``torch.inference_mode``), which keeps no version, so a change to it could not be seen.
    With ``gradients`` (a copy that keeps autograd, :mod:`loupe._frozen_grad`): any hook at
    all, and BatchNorm is not needed."""
    state: list[tuple[int, int, int]] = []
    batchnorm = False
    stack, seen = [model], {model}
    try:
        while stack:
            module = stack.pop()
            if module.training or _has_hooks(module, gradients):
                return None
            batchnorm = batchnorm or isinstance(module, nn.modules.batchnorm._BatchNorm)
            for tensors in (module._parameters, module._buffers):
                state += [(id(t), t.data_ptr(), t._version) for t in tensors.values()
                          if t is not None]
            for child in module._modules.values():
                if child is not None and child not in seen:
                    seen.add(child)
                    stack.append(child)
    except RuntimeError:  # "Inference tensors do not track version counter."
        return None
    return tuple(state) if batchnorm or gradients else None


def _has_hooks(m: nn.Module, gradients: bool = False) -> bool:
    """Whether ``m`` has a hook other than loupe's own capturing ones (which, under no_grad,
    only record the output: :func:`loupe.hooks.hooked`); with ``gradients``, any hook."""
    if not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
            or m._backward_pre_hooks):
        return False
    if gradients:  # with gradients on, a capturing hook cuts the graph at its layer
        return True
    hooks = itertools.chain.from_iterable(getattr(m, name, {}).values() for name in HOOK_DICTS)
    return not all(getattr(hook, "observes_only", False) for hook in hooks)


def _frozen(model: nn.Module) -> torch.jit.ScriptModule | None:
    """The frozen, inference-optimised TorchScript copy of ``model``, or None where scripting
    fails (TorchScript is deprecated in recent PyTorch; its FutureWarnings are not the user's
    concern here)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(without_hooks(model))
            return torch.jit.optimize_for_inference(torch.jit.freeze(scripted.eval()))
    except Exception:  # noqa: BLE001 - any failure to script means: use the model itself
        return None


def without_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without the capturing hooks that :func:`may_freeze` let
    through (TorchScript would try to compile them)."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        for name in HOOK_DICTS:
            getattr(m, name, {}).clear()
    return clone


def _agrees(frozen: torch.jit.ScriptModule, expected: object, x: torch.Tensor,
            exact: bool = False) -> bool:
    """Whether the copy's output on ``x`` is the model's, ``expected`` (a tensor, or a tuple of
    tensors compared one by one), to the tolerance (``exact``: bit for bit)."""
    try:
        got = frozen(x)
    except Exception:  # noqa: BLE001 - a copy that cannot run this input is not used
        return False
    if exact:
        return (isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor)
                and got.dtype == expected.dtype and torch.equal(got, expected))
    if isinstance(expected, tuple):
        return (isinstance(got, tuple) and len(got) == len(expected)
                and all(_close_enough(g, e) for g, e in zip(got, expected, strict=True)))
    return _close_enough(got, expected)


def _close_enough(got: object, expected: object) -> bool:
    """Whether ``got`` is the tensor ``expected`` to the check's tolerance (same shape and
    dtype; relative :data:`CHECK_RTOL`, absolute :data:`CHECK_ATOL` of its largest value)."""
    if not (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)):
        return False
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return False
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return bool(torch.allclose(got, expected, rtol=CHECK_RTOL, atol=CHECK_ATOL * scale))


def _guarded(known: FrozenCopy, key: tuple[object, ...], fallback: Forward) -> Forward:
    """The copy's forward for inputs of shape ``key``; should it raise, that shape is not
    given to the copy again and ``fallback`` runs the input (an error of the model's own is the
    user's to see)."""

    def forward(x: torch.Tensor) -> object:
        if known.shapes[key] and known.module is not None:
            try:
                return known.module(x)
            except Exception:  # noqa: BLE001 - the fallback runs it, and may raise itself
                known.shapes[key] = False
        return fallback(x)

    return forward
