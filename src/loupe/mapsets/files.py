"""Map files: per-image map files (their format, writing and reading), run descriptions,
resumability.

A map file ``<folder>/<id>.npz`` holds (never pickles):

- ``maps`` ``(K, H, W)`` float16 at the image's size, each map divided by its largest
  absolute value (so every map uses float16's range fully; the background-threshold rule and
  every normalisation loupe applies are invariant to that positive scale);
- ``peak`` ``(K,)`` float32, the factor of each map: ``raw = maps * peak``;
- ``classes`` ``(K,)`` int64, the label each map paints in the data set's label space
  (the mask value for segmentation sets, 1..20 for VOC);
- ``scores`` ``(K,)`` float32, the classifier's logit for each map's class on the unscaled,
  unflipped image;
- ``predicted`` ``()`` int64, the classifier's top-1 class in the data set's label space
  (-1 when no data-set class has a counterpart).

Files are written atomically with :func:`loupe.io.save_npz`; its zip members carry the fixed
date 1980-01-01 (``zipfile``'s default for members opened for writing), so the same maps give
the same bytes and an interrupted and resumed run, or a sharded one, can be compared with an
uninterrupted one byte for byte.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loupe.io import read_json, to_jsonable

logger = logging.getLogger(__name__)

MAP_KEYS = ("maps", "classes")
FLOAT16_MAX = float(np.finfo(np.float16).max)


def float16_maps(maps: torch.Tensor) -> np.ndarray:
    """Maps as a float16 array, clamped to float16's range instead of inf (a warning says
    when values were clamped, and when there are NaNs)."""
    maps = maps.float()
    if maps.numel():
        peak = float(maps.abs().nan_to_num(nan=0.0).max())
        if peak > FLOAT16_MAX:
            logger.warning("maps exceed float16's range (%.3g); values clamped", peak)
        if maps.isnan().any():
            logger.warning("maps contain NaN")
    return maps.clamp(-FLOAT16_MAX, FLOAT16_MAX).half().cpu().numpy()


def map_file_arrays(
    maps: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, predicted: int
) -> dict[str, np.ndarray]:
    """The arrays of one map file (see the module docstring) from raw summed maps
    ``(K, H, W)``: each map divided by its peak absolute value, as float16."""
    maps = maps.float()
    peak = maps.abs().nan_to_num(nan=0.0).amax((-2, -1)) if maps.shape[0] else maps.new_zeros(0)
    peak = torch.where((peak > 0) & torch.isfinite(peak), peak, torch.ones_like(peak))
    return {
        "maps": float16_maps(maps / peak[:, None, None]),
        "peak": peak.cpu().numpy().astype(np.float32),
        "classes": classes.cpu().numpy().astype(np.int64),
        "scores": scores.float().cpu().numpy().astype(np.float32),
        "predicted": np.array(predicted, dtype=np.int64),
    }


def output_path(folder: Path, sample_id: str, suffix: str) -> Path:
    """``folder/<id><suffix>``; a ValueError for ids that would leave the folder."""
    relative = Path(sample_id + suffix)
    if relative.is_absolute() or ".." in relative.parts or not sample_id:
        raise ValueError(f"image id {sample_id!r} cannot be used as a file name inside {folder}")
    return folder / relative


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files (``.NAME.tmp-XXXX``, see :func:`loupe.io.atomic_path`)
    that a killed run left in ``folder`` and its sub-folders; returns them. Only call it while
    no other process writes into ``folder``."""
    if not folder.is_dir():
        return []
    stale = [p for p in folder.rglob(".*.tmp-*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_output_folder(out: Path, run_file: str, what: str) -> None:
    """A ValueError unless ``out`` is absent, empty (hidden files aside) or holds
    ``run_file`` (an earlier run of the same command, whose description the caller then
    checks): a folder with other files is another run's or the user's, and outputs written
    into it would be mixed with them."""
    if not out.is_dir() or (out / run_file).is_file():
        return
    others = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ValueError(f"--out {out}: not empty ({shown}) and not {what} (no {run_file}); "
                         "give a new or empty folder")


def read_run_description(path: Path, what: str) -> dict[str, Any]:
    """The JSON object of a run description (``maps.json``, ``masks.json``); errors name the
    file."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} must be a JSON object")
    return data


def check_same_run(
    path: Path, description: Mapping[str, Any], what: str, extent: tuple[str, ...] = (),
    reasons: Mapping[str, str] | None = None,
) -> None:
    """A ValueError when ``path`` (an earlier run's description) exists and differs from
    ``description``: resuming into a folder made with other settings would mix outputs. Keys
    in ``extent`` say how much was done, not how (e.g. how many images): they may differ.
    ``reasons`` says in words what a changed key means (e.g. that the weights changed),
    where the earlier run recorded it."""
    if not path.is_file():
        return
    old = read_run_description(path, what)
    new = to_jsonable(description)
    changed = sorted(k for k in set(old) | set(new)
                     if k not in extent and old.get(k) != new.get(k))
    if not changed:
        return
    explained = [k for k in changed if k in (reasons or {}) and old.get(k) is not None]
    first = explained or changed
    details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in first[:4])
    problem = (reasons or {}).get(first[0], "this folder holds a run with other settings")
    raise ValueError(f"{path}: {problem} ({details}); use another --out or delete the folder "
                     "to start over")


def check_map_classes(classes: np.ndarray | torch.Tensor, num_classes: int, path: Path) -> None:
    """A ValueError naming the map file ``path`` unless its ``classes`` lie in
    ``1..num_classes-1`` (a data set's object classes; 0 is the background)."""
    values = torch.as_tensor(classes).flatten()
    bad = values[(values < 1) | (values >= num_classes)]
    if bad.numel():
        raise ValueError(f"{path}: map classes must lie in 1..{num_classes - 1} (the data "
                         f"set's {num_classes} classes, 0 = background), got "
                         f"{torch.unique(bad)[:10].tolist()}")


def load_map_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``maps`` ``(K, H, W)`` float32 and ``classes`` ``(K,)`` int64 from a map file; errors
    name the file (missing, unreadable, pickled, wrong keys or shapes, NaN or infinite
    values: NaN would silently count as 0 and an infinite patch would take the whole map)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: map file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in MAP_KEYS if k not in data.files]
            if missing:
                raise ValueError(f"{path}: map file lacks {', '.join(missing)} "
                                 f"(has {', '.join(data.files) or 'nothing'})")
            maps, classes = data["maps"], data["classes"]
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path}: cannot read map file ({error})") from error
    except ValueError as error:
        if str(error).startswith(str(path)):
            raise
        raise ValueError(f"{path}: cannot read map file ({error})") from error
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.floating):
        raise ValueError(f"{path}: 'maps' must be float (K, H, W), got {maps.dtype} {maps.shape}")
    if classes.shape != (maps.shape[0],) or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(
            f"{path}: 'classes' must be {maps.shape[0]} integers (one per map), got "
            f"{classes.dtype} {classes.shape}"
        )
    maps = maps.astype(np.float32)
    finite = np.isfinite(maps)
    if not finite.all():
        nan, inf = int(np.isnan(maps).sum()), int(np.isinf(maps).sum())
        raise ValueError(f"{path}: map file holds {nan} NaN and {inf} infinite values (of "
                         f"{maps.size}); remake it (loupe maps refuses to write such maps)")
    return maps, classes.astype(np.int64)
