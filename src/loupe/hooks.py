"""The one hook context manager: capture activations on named layers, restore everything after."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from loupe.layers import find_module


class Captured(dict[str, torch.Tensor]):
    """Layer name -> the activation that layer produced in the last forward (a leaf that
    requires grad when ``leaf=True``, so ``torch.autograd.grad`` can reach it).

    ``cut`` is True while the leaf replaces the layer's output; inside :meth:`whole_graph`
    the layer's output is captured as it is and the graph reaches back to the input (for a
    method that also needs input gradients, as Guided Grad-CAM's guided pass)."""

    cut: bool = True

    @contextmanager
    def whole_graph(self) -> Iterator[None]:
        """Forwards in this block record the whole graph: outputs are not cut at the layers."""
        self.cut = False
        try:
            yield
        finally:
            self.cut = True


@contextmanager
def hooked(
    model: nn.Module, layers: Sequence[str] = (), *, leaf: bool = True,
    edit: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    freeze: bool = True,
) -> Iterator[Captured]:
    """Prepare ``model`` for explanation and capture the outputs of ``layers``.

    Inside the block the model is in eval mode and, with ``freeze=True``, none of its parameters
    requires grad (so no weight gradient is ever computed or accumulated; ``freeze=False``
    leaves the flags alone, for callers that run no backward). With ``leaf=True`` each captured
    output is replaced by a detached copy that requires grad: the graph starts at that layer,
    and nothing before it is recorded. Token outputs ``(B, N, C)`` are captured as they are.
    ``edit`` maps more layer names to functions of their output whose result the model goes on
    with (AblationCAM's ablated copies, FullGrad's zero probes); those outputs are captured as
    they are. On exit, in ``finally``: hooks removed, ``training`` and every ``requires_grad``
    flag restored, also when the forward raised.
    """
    edit = dict(edit or {})
    modules = {name: find_module(model, name) for name in [*layers, *edit]}
    training, trainable = _training_and_trainable(model, freeze)
    captured = Captured()
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> object:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"layer {name!r} returns {type(output).__name__}, not a tensor; "
                    "choose a layer whose output is a feature map"
                )
            if name in edit:
                captured[name] = output
                return edit[name](output)
            if leaf and captured.cut and torch.is_grad_enabled():
                # The graph starts at this leaf; the model goes on with a non-leaf copy so
                # that in-place ops after the layer (DenseNet's F.relu(inplace=True)) work.
                captured[name] = output.detach().requires_grad_(True)
                return captured[name].clone()
            captured[name] = output
            return output

        # under no_grad a capture changes no output: loupe._frozen may run a copy without it
        hook.observes_only = name not in edit  # type: ignore[attr-defined]
        return hook

    try:
        if training:  # a model already in eval mode is left untouched (fast)
            model.eval()
        for p in trainable:
            p.requires_grad_(False)
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        for p in trainable:
            p.requires_grad_(True)
        for m in training:
            m.training = True


def _training_and_trainable(model: nn.Module, parameters: bool = True,
                            ) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """The modules of ``model`` in training mode and (with ``parameters``, else none) its
    parameters that require grad, in one walk (``explain`` calls this on every call). The walk
    follows ``_modules`` itself (``model.modules()`` also builds every module's dotted name:
    32 against 13 us on a ResNet-18; ``model.parameters()`` would walk again), visiting each
    module once (a shared one is not walked twice). A parameter shared by two modules is
    listed twice, which is harmless for setting its flag."""
    training: list[nn.Module] = []
    trainable: list[nn.Parameter] = []
    stack, seen = [model], {model}
    while stack:
        module = stack.pop()
        for child in module._modules.values():
            if child is not None and child not in seen:
                seen.add(child)
                stack.append(child)
        if module.training:
            training.append(module)
        if parameters:
            trainable += [p for p in module._parameters.values()
                          if p is not None and p.requires_grad]
    return training, trainable


GUIDED_RELUS = (nn.ReLU, nn.ReLU6)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[set[object]]:
    """Guided backpropagation through every ``nn.ReLU`` and ``nn.ReLU6`` module of ``model``.

    Inside the block, each such module's output gets a gradient hook that keeps the positive
    part of the incoming gradient, so the gradient reaching the ReLU's input is
    ``[x > 0] * max(g, 0)`` (ReLU6: ``[0 < x < 6] * max(g, 0)``) instead of ``[x > 0] * g``
    (no copy of the activation; ``inplace=True`` is fine). ReLUs applied as functions
    (``F.relu``) are not modules and stay unguided (see :mod:`loupe.methods.guided`).

    Yields the set of autograd nodes of the guided outputs, filled by each forward, so that a
    graph walk can tell guided ReLUs from functional ones. Module hooks and gradient hooks are
    removed in ``finally``, also when the block raised.
    """
    nodes: set[object] = set()
    handles = []

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if torch.is_grad_enabled() and output.requires_grad:
            nodes.add(output.grad_fn)
            handles.append(output.register_hook(_positive))

    try:
        for module in model.modules():
            if isinstance(module, GUIDED_RELUS):
                handles.append(module.register_forward_hook(hook))
        yield nodes
    finally:
        for handle in handles:
            handle.remove()


def _positive(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)
