"""Map sets: a class map file per image of a data set (``loupe maps``, :mod:`~loupe.mapsets.
generate`), their format (:mod:`~loupe.mapsets.files`), and pseudo-masks from them (``loupe
masks``, :mod:`~loupe.mapsets.pseudo_masks`). Resumable, and sharded under ``torchrun``."""

from loupe.mapsets.files import float16_maps, load_map_file, map_file_arrays
from loupe.mapsets.generate import MapsConfig, MapsResult, generate_maps, multiscale_maps
from loupe.mapsets.pseudo_masks import MasksConfig, write_pseudo_masks

__all__ = [
    "MapsConfig",
    "MapsResult",
    "MasksConfig",
    "float16_maps",
    "generate_maps",
    "load_map_file",
    "map_file_arrays",
    "multiscale_maps",
    "write_pseudo_masks",
]
