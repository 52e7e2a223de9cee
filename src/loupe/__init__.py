"""loupe: where an image classifier looks, and how well that segments."""

from loupe.api import MapContext, explain, normalize
from loupe.layers import find_target_layer
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
    "get_method",
    "list_methods",
    "normalize",
    "register",
]
