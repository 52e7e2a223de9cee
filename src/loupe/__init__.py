"""loupe: where an image classifier looks, and how well that segments.

The package's names (``loupe.explain``, ``loupe.list_methods``...) are imported on first use
(PEP 562), so that ``import loupe.cli`` and ``loupe --help`` do not import torch. Importing
the package names :mod:`loupe.methods` to the registry, which imports it before its first
lookup: every built-in method is listed whichever module asks."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from loupe.registry import load_methods_from

__version__ = "0.1.0"

load_methods_from("loupe.methods")

# Public name -> the module that defines it (imported on first access).
_EXPORTS = {
    "BoxScore": "loupe.targets",
    "ClassScore": "loupe.targets",
    "MapContext": "loupe.api",
    "SegmentationScore": "loupe.targets",
    "explain": "loupe.api",
    "explainer": "loupe.api",
    "find_target_layer": "loupe.layers",
    "format_method_spec": "loupe.method_specs",
    "get_method": "loupe.registry",
    "list_methods": "loupe.registry",
    "normalize": "loupe.masks.normalize",
    "parse_method_spec": "loupe.method_specs",
    "register": "loupe.registry",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    """A public name, imported on first access (and then cached in the module)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'loupe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # the names for type checkers and the import-structure test
    import loupe.methods  # noqa: F401
    from loupe.api import MapContext, explain, explainer  # noqa: F401
    from loupe.layers import find_target_layer  # noqa: F401
    from loupe.masks.normalize import normalize  # noqa: F401
    from loupe.method_specs import format_method_spec, parse_method_spec  # noqa: F401
    from loupe.registry import get_method, list_methods, register  # noqa: F401
    from loupe.targets import BoxScore, ClassScore, SegmentationScore  # noqa: F401
