"""The gradient-weighted CAMs' forward through the frozen copy: the target layer's output from
the copy of :mod:`loupe._frozen_layer`, and the rest of the model run on it with autograd, where
that rest is affine in the layer's output.

Grad-CAM and its relatives need the layer's output ``A`` and ``dS/dA``: one forward, and a
backward from the scores to the layer only. Everything before the layer is a plain forward,
which the frozen TorchScript copy makes faster than the model (resnet18 1.14x at 64x64, batch
1: docs/speed.md, "CAM's forward through a frozen copy"). The part after the layer, the *head*,
must keep autograd, so :func:`affine_head` takes it from the model's ``torch.fx`` graph as a
module of its own, calling the model's own modules (their weights as they are now), and only
when every operation in it is affine: averaging pools, reshapes, eval-mode dropout and
BatchNorm, convolutions, linear layers. Then ``dS/dA`` depends on the head's weights and on how
``S`` depends on the output, never on ``A`` itself, so the float rounding by which the copy's
``A`` differs from the model's (the folded BatchNorm) cannot move a ReLU or max-pool decision
in the head: gradients and maps are the model's to float rounding. A head with anything else
(Grad-CAM at an inner layer, VGG's classifier, DenseNet's final ReLU) runs the model as before,
as does everything the copy itself does not take (:mod:`loupe._frozen_layer`'s conditions:
the CPU, an explainer block or at least 64 images, eval mode, BatchNorm, no foreign hooks).
``LOUPE_FROZEN_FORWARD=0`` turns it off with the copy.
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from loupe._frozen_layer import layer_graph, layer_inference_forward

#: ``forward(images) -> (layer output as a leaf that requires grad, model output from it)``,
#: or None where the copy gave way
LeafForward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]

AFFINE_MODULES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AvgPool3d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Linear,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.modules.batchnorm._BatchNorm,  # eval mode: the copy is used for eval-mode models only
)
AFFINE_FUNCTIONS: frozenset[object] = frozenset({
    torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.mean, torch.permute,
    torch.transpose, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.linear, operator.getitem,
})
AFFINE_METHODS = frozenset({"flatten", "view", "reshape", "mean", "squeeze", "unsqueeze",
                            "permute", "transpose", "contiguous", "size", "dim"})


@dataclass(frozen=True)
class AffineHead:
    """The head as a module, and the model's objects it calls (target -> object), which must
    still be the model's for the head to be used."""

    module: fx.GraphModule
    parts: tuple[tuple[str, object], ...]

    def current(self, model: nn.Module) -> bool:
        return all(_attribute(model, target) is part for target, part in self.parts)


_HEADS: weakref.WeakKeyDictionary[nn.Module, dict[str, AffineHead | None]] = (
    weakref.WeakKeyDictionary()
)


def layer_head_forward(model: nn.Module, layer: str, images: torch.Tensor,
                       repeated: bool) -> LeafForward | None:
    """The forward giving the layer's output (the frozen copy's, as a leaf) and the model's
    output computed from it by the affine head with autograd, for ``images`` ``(n, C, H, W)``;
    None where the model itself is to run (module docstring). ``repeated``: the call is one of
    an explainer block's."""
    with torch.no_grad():
        forward = layer_inference_forward(model, layer, images, repeated)
    head = None if forward is None else affine_head(model, layer)
    if forward is None or head is None:
        return None

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        with torch.no_grad():
            outputs = forward(x)
        if outputs is None:
            return None
        leaf = outputs[0].requires_grad_(True)
        with torch.enable_grad():
            return leaf, head(leaf)

    return run


def affine_head(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """The part of ``model`` after ``layer`` as a module of the layer's output, calling the
    model's own modules; None where that part is not affine in the layer's output alone, or
    the model cannot be traced. Kept per model and layer while the model's objects it calls
    are the same."""
    heads = _HEADS.setdefault(model, {})
    known = heads.get(layer, False)
    if known is False or (known is not None and not known.current(model)):
        known = heads[layer] = _built_head(model, layer)
    return None if known is None else known.module


def _built_head(model: nn.Module, layer: str) -> AffineHead | None:
    try:
        traced = layer_graph(model, layer)
    except Exception:  # noqa: BLE001 - a model fx cannot trace runs itself
        return None
    if traced is None:
        return None
    graph = _head_graph(model, *traced)
    if graph is None:
        return None
    parts = tuple((str(n.target), _attribute(model, str(n.target))) for n in graph.nodes
                  if n.op in ("call_module", "get_attr"))
    return AffineHead(fx.GraphModule(model, graph), parts)


def _head_graph(model: nn.Module, graph: fx.Graph, call: fx.Node) -> fx.Graph | None:
    """The nodes of ``model``'s ``graph`` that its output needs after ``call``, as a graph
    whose one input stands for ``call``'s output; None when one of them is not affine or
    needs the input."""
    output = next(n for n in graph.nodes if n.op == "output")
    needed, stack = {output}, list(output.all_input_nodes)
    while stack:
        node = stack.pop()
        if node is call or node in needed:
            continue
        if not _affine(model, node):
            return None
        needed.add(node)
        stack.extend(node.all_input_nodes)
    head = fx.Graph()
    env = {call: head.placeholder("activation")}
    for node in graph.nodes:  # in the graph's order, so inputs come first
        if node in needed:
            env[node] = head.node_copy(node, env.__getitem__)
            env[node].type = None
    return head


def _affine(model: nn.Module, node: fx.Node) -> bool:
    """Whether ``node`` of ``model``'s graph is an affine operation (or a constant) of its
    tensor inputs."""
    if node.op == "get_attr":
        return True
    if node.op == "call_module":
        return isinstance(_attribute(model, str(node.target)), AFFINE_MODULES)
    if node.op == "call_function":
        return node.target in AFFINE_FUNCTIONS
    return node.op == "call_method" and node.target in AFFINE_METHODS


def _attribute(model: nn.Module, target: str) -> object:
    try:
        return functools.reduce(getattr, target.split("."), model)
    except AttributeError:
        return None
