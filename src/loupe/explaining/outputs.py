"""The files of ``loupe explain``: the output folder checked before anything runs, one stem per
image, and each explanation written atomically (``.npz`` arrays, ``.png`` overlay)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from loupe.explaining.targets import Target
from loupe.io import save_image, save_npz
from loupe.mapsets.files import float16_maps
from loupe.reports.overlay import explanation_figure


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and write (then remove) a probe file in it; a ValueError
    naming ``--out`` and the problem when that fails (a file in the way, no permission, a
    read-only or full disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".loupe-write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except FileExistsError:
        raise ValueError(f"--out {folder}: exists and is not a folder") from None
    except OSError as error:
        problem = error.strerror or str(error)
        raise ValueError(f"--out {folder}: cannot write there ({problem})") from None


def image_stems(images: Sequence[Path]) -> list[str]:
    """The stem each image's outputs are named after (``photos/cat.jpg`` -> ``cat``); a
    ValueError when two images share one."""
    seen: dict[str, Path] = {}
    for path in images:
        if path.stem in seen:
            raise ValueError(
                f"{seen[path.stem]} and {path} would write the same outputs ({path.stem}.*); "
                "rename one or explain them into different --out folders"
            )
        seen[path.stem] = path
    return list(seen)


def target_title(target: Target, names: Sequence[str] | None) -> str:
    """``"macaw (88) 0.997"`` (``"class 88 0.997"`` without names; ``"dog (18) box 1 0.871"``
    for a detection)."""
    label = f"{names[target.cls].split(',')[0]} ({target.cls})" if names and 0 <= target.cls < len(
        names) else f"class {target.cls}"
    box = "" if target.box_index is None else f" box {target.box_index}"
    return f"{label}{box} {target.score:.3f}"


def figure_subtitle(method: str, layer: str | None) -> str:
    """The second heading line of an overlay: the method, its layer and the normalisation."""
    on = f" on {layer}" if layer else ""
    return f"{method}{on}; colours: the map min-max normalised (bar: its raw values)"


def write_explanation(stem: Path, map_: torch.Tensor, target: Target, display: torch.Tensor,
                      title: str, subtitle: str, *, alpha: float, colormap: str) -> None:
    """``stem.npz`` and ``stem.png`` (:func:`explanation_figure` of the map on ``display``, a
    detection's box outlined), each atomically. The arrays, as in loupe's map files: ``maps``
    ``(1, h, w)`` float16 divided by ``peak`` ``(1,)`` float32, its largest absolute value
    (``raw = maps * peak``: float16 keeps its precision for maps of any scale, gradients of
    1e-6 included), ``classes (1,)`` int64, ``scores (1,)`` float32, and ``boxes (1, 4)``
    float32 for a detection."""
    peak = float(map_.abs().max())
    peak = peak if peak > 0 and math.isfinite(peak) else 1.0
    arrays = {
        "maps": float16_maps(map_[None] / peak),
        "peak": np.array([peak], dtype=np.float32),
        "classes": np.array([target.cls], dtype=np.int64),
        "scores": np.array([target.score], dtype=np.float32),
    }
    if target.box is not None:
        arrays["boxes"] = np.array([target.box], dtype=np.float32)
    save_npz(stem.with_name(stem.name + ".npz"), **arrays)
    box = None
    if target.box is not None:  # input pixels -> display pixels
        sy, sx = display.shape[-2] / map_.shape[-2], display.shape[-1] / map_.shape[-1]
        box = [target.box[0] * sx, target.box[1] * sy, target.box[2] * sx, target.box[3] * sy]
    figure = explanation_figure(display, map_, title, subtitle, alpha=alpha, colormap=colormap,
                                box=box)
    save_image(stem.with_name(stem.name + ".png"), figure)
