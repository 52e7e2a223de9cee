"""A frozen TorchScript copy that returns one layer's output with the model's: the clean forward
of CAM, EigenCAM, KPCA-CAM and RandomCAM, faster.

Those methods make one forward under ``torch.inference_mode`` and read the target layer's
output and the logits. :func:`layer_inference_forward` gives a copy of the model, traced with
``torch.fx`` so that the layer's output is returned next to the model's, then scripted and
frozen (``torch.jit.freeze`` folds each BatchNorm into its convolution, and the forward runs
without Python's per-module calls). CPU time of the forward alone, model / copy, one thread,
random weights (``bench/frozen_forward.py --layer``; docs/speed.md, "CAM's forward through a
frozen copy"): resnet18 1.14x at 64x64 and at 128x128, batch 1, 1.17x at 64x64, batch 4,
1.06x at 224x224; resnet50 1.03x, DenseNet-121 1.19x, MobileNetV2 1.40x at 224x224, batch 1.
``torch.jit.optimize_for_inference`` (oneDNN's prepacked convolutions) loses at one small
image (resnet18 0.81x at 64x64, 0.93x at 128x128) and wins at one 224x224 image (resnet18
1.43x, resnet50 1.19x); at 16,384 pixels it depends on the shape (four 64x64 images 1.22x,
against the plain copy's 1.17x). So a call of at least :data:`OPTIMIZE_MIN_PIXELS` input
pixels (rows x H x W), or of at least :data:`loupe._frozen.FROZEN_MIN_ROWS` rows, gets the
optimised copy; that threshold is this machine's measurement, not a law.

Freezing costs 0.3-0.6 s for a resnet18, 0.8 s for a resnet50 and MobileNetV2, 3.5 s for a
DenseNet-121, once per model, layer and kind of copy (each copy holds its own weights while
the model lives), so a copy is used where it pays back: in the calls of a
:func:`loupe.explainer` block (``repeated``, from the block's first call on) and in calls of
at least ``FROZEN_MIN_ROWS`` rows; a single ``explain`` call of fewer rows runs the model. The
way a call takes depends on that call alone (the block it is in, its shape), never on earlier
calls. The copy is used only under :func:`loupe._frozen.may_freeze`'s conditions (CPU, no
gradient, eval mode, no hooks but loupe's capturing ones, BatchNorm present), for a model
``torch.fx`` can trace and TorchScript can compile whose output and layer output are tensors,
while its parameters and buffers are the ones it was frozen from; and on each new input shape
its outputs on two rows (the layer's and the model's) are checked against the model's. The
maps agree with the model's to float rounding. ``LOUPE_FROZEN_FORWARD=0`` turns it off.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch
from torch import fx, nn

from loupe._frozen import (
    FROZEN_MIN_ROWS,
    FrozenCopy,
    checked_copy,
    may_freeze,
    model_state,
    without_hooks,
)
from loupe.hooks import hooked

#: Input pixels per call (rows x H x W) from which the copy is also optimised for inference
#: (oneDNN's prepacked convolutions): they lose at one small image and win at one 224x224
#: image (module docstring)
OPTIMIZE_MIN_PIXELS = 32768

#: ``forward(images) -> (layer output, model output)``, or None where the copy gave way
LayerForward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]

_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, bool], FrozenCopy]] = (
    weakref.WeakKeyDictionary()
)


def layer_inference_forward(model: nn.Module, layer: str, images: torch.Tensor,
                            repeated: bool) -> LayerForward | None:
    """The frozen forward returning ``(output of layer, output of model)`` for ``images``
    ``(n, C, H, W)``, or None where the model itself is to run (see the module docstring);
    ``repeated``: the call is one of an explainer block's."""
    rows = images.shape[0]
    if not (repeated or rows >= FROZEN_MIN_ROWS) or not may_freeze(model, images):
        return None
    optimized = rows >= FROZEN_MIN_ROWS or images[0, 0].numel() * rows >= OPTIMIZE_MIN_PIXELS
    state = model_state(model)
    if state is None:
        return None
    # should the copy raise, its forward gives None and the caller runs the model
    return checked_copy(_COPIES.setdefault(model, {}), (layer, optimized), state, images,
                        lambda x: _reference(model, layer, x),
                        lambda: _frozen_with_layer(model, layer, optimized), lambda x: None)


def _reference(model: nn.Module, layer: str, x: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The model's ``(layer output, output)`` on ``x``, or None when either is no tensor."""
    with hooked(model, [layer], leaf=False, freeze=False) as captured:
        output = model(x)
    activation = captured.get(layer)
    if isinstance(activation, torch.Tensor) and isinstance(output, torch.Tensor):
        return activation, output
    return None


def _frozen_with_layer(model: nn.Module, layer: str, optimized: bool
                       ) -> torch.jit.ScriptModule | None:
    """The frozen copy returning ``(layer output, output)`` (``optimized``: also
    ``optimize_for_inference``), or None where tracing, scripting or freezing fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation warnings
            traced = _traced_with_layer(without_hooks(model), layer)
            if traced is None:
                return None
            frozen = torch.jit.freeze(torch.jit.script(traced.eval()))
            return torch.jit.optimize_for_inference(frozen) if optimized else frozen
    except Exception:  # noqa: BLE001 - a model that cannot be copied runs itself
        return None


def _traced_with_layer(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """``model`` traced by ``torch.fx`` with ``layer`` kept as one call, whose output is
    returned with the model's; None when the layer is not called exactly once."""
    traced = layer_graph(model, layer)
    if traced is None:
        return None
    graph, call = traced
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = ((call, output.args[0]),)
    for node in graph.nodes:
        # the forward's return annotation no longer holds, and string annotations (``from
        # __future__ import annotations``) would reach TorchScript as unknown type names
        node.type = None
    return fx.GraphModule(model, graph)


def layer_graph(model: nn.Module, layer: str) -> tuple[fx.Graph, fx.Node] | None:
    """``model``'s forward traced by ``torch.fx`` with ``layer`` kept as one call, and that
    call's node; None when the layer is not called exactly once. Raises what tracing raises."""

    class Tracer(fx.Tracer):
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return name == layer or super().is_leaf_module(module, name)

    graph = Tracer().trace(model)
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    return (graph, calls[0]) if len(calls) == 1 else None
