"""The method registry: methods register under a short name; the CLI, docs and tests read it.

The registry imports no method by name: the package's ``__init__`` (which runs before any
module of loupe) names :mod:`loupe.methods` with :func:`load_methods_from`, and the registry
imports it before its first lookup; its modules register themselves. So every built-in method
is listed whichever module asks first, and importing loupe alone (``loupe --help``) does not
import torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# A map method: (model, images, targets, context) -> raw maps (B, K, h, w) at any resolution.
MapFunction = Callable[..., "torch.Tensor"]
# (model, target layer or None, options, memo) -> None: fills memo once per explainer block.
Prepare = Callable[["torch.nn.Module", "str | None", Mapping[str, object], dict], None]


@dataclass(frozen=True)
class MethodSpec:
    """What the registry knows about one method.

    name: the short name used by ``explain(method=...)`` and the CLI.
    function: computes raw maps ``(B, K, h, w)``; ``explain`` upsamples them.
    uses_layer: True when the method reads activations of a target layer (CAM family).
    stochastic: True when the method takes a ``seed``/``generator``.
    paper: the reference, one line.
    gradients: False when the method runs no backward (CAM, Score-CAM, occlusion...):
        ``explain`` then runs it under ``torch.no_grad()`` and leaves the model's
        ``requires_grad`` flags alone instead of switching them off and on around the call.
    prepare: None, or ``prepare(model, layer, options, memo)``, run once when a
        :func:`loupe.explainer` block starts: it may put in ``memo`` what depends on the model
        alone (CAM's linear head), which every call of the block then finds in
        ``MapContext.memo`` (each ``explain`` call starts with an empty one).
    """

    name: str
    function: MapFunction
    uses_layer: bool
    stochastic: bool
    paper: str
    gradients: bool = True
    prepare: Prepare | None = None


class _Registry:
    """Name -> MethodSpec. One instance lives in this module; it is only written at import time."""

    def __init__(self) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self._pending: list[str] = []  # modules to import before the first lookup

    def load_from(self, module: str) -> None:
        if module not in self._pending:
            self._pending.append(module)

    def add(self, spec: MethodSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"method {spec.name!r} is registered twice")
        self._specs[spec.name] = spec

    def view(self) -> Mapping[str, MethodSpec]:
        while self._pending:  # popped first: a module that looks up while importing is fine
            importlib.import_module(self._pending.pop(0))
        return MappingProxyType(self._specs)


_REGISTRY = _Registry()


def load_methods_from(module: str) -> None:
    """Import ``module`` (whose import registers methods) before the registry's next lookup."""
    _REGISTRY.load_from(module)


def register(
    name: str, *, uses_layer: bool, stochastic: bool = False, paper: str,
    gradients: bool = True, prepare: Prepare | None = None,
) -> Callable[[MapFunction], MapFunction]:
    """Decorator: register a map function under ``name`` (see :class:`MethodSpec`)."""

    def decorate(function: MapFunction) -> MapFunction:
        _REGISTRY.add(MethodSpec(name, function, uses_layer, stochastic, paper, gradients,
                                 prepare))
        return function

    return decorate


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY.view())


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``; a ValueError listing the choices otherwise."""
    specs = _REGISTRY.view()
    if name not in specs:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(specs))}")
    return specs[name]
