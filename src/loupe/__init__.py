"""loupe: where an image classifier looks, and how well that segments.

Importing the package registers the built-in map methods (:mod:`loupe.methods`); the
registry itself imports none."""

import loupe.methods  # noqa: F401  (registers the built-in methods)
from loupe.api import MapContext, explain
from loupe.layers import find_target_layer
from loupe.masks.normalize import normalize
from loupe.method_specs import format_method_spec, parse_method_spec
from loupe.registry import get_method, list_methods, register
from loupe.targets import BoxScore, ClassScore, SegmentationScore

__version__ = "0.1.0"

__all__ = [
    "BoxScore",
    "ClassScore",
    "MapContext",
    "SegmentationScore",
    "__version__",
    "explain",
    "find_target_layer",
    "format_method_spec",
    "get_method",
    "list_methods",
    "normalize",
    "parse_method_spec",
    "register",
]
