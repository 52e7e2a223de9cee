"""Files: atomic writes (temp file in the same folder, then rename) and open formats: arrays
as ``.npz``, images as PNG/JPEG, JSON (the one writer), and weights-only torch files."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

PathLike = str | os.PathLike[str]
logger = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    A crash or kill leaves either the old file or no file, never a partial one; the temp
    file (``.name.tmp-XXXX``) is removed on error."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode open() would
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path: PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to ``path`` (``.npz``, uncompressed) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by :func:`save_npz` (never unpickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def save_image(path: PathLike, image: Image.Image) -> None:
    """Write a PIL image atomically; the format follows the suffix of ``path``."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


@contextmanager
def open_image(path: PathLike) -> Iterator[Image.Image]:
    """``PIL.Image.open(path)`` (closed on exit), with PIL's DecompressionBombWarning (an image
    above ``Image.MAX_IMAGE_PIXELS``, about 89 megapixels, but within twice that, where PIL
    raises DecompressionBombError) as one logged warning that names the file. PIL's own
    warning names no file and is not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > limit:
            logger.warning("%s: %dx%d pixels (%.3g megapixels) is above PIL's decompression-bomb "
                           "limit of %.3g megapixels; reading it anyway", path, image.width,
                           image.height, image.width * image.height / 1e6, limit / 1e6)
        yield image


def load_rgb(path: PathLike) -> Image.Image:
    """An RGB image as it is meant to be seen (:func:`rgb_image`: EXIF orientation applied,
    16-bit scaled to 8-bit); a ValueError naming the file when it cannot be read."""
    try:
        with open_image(path) as image:
            return rgb_image(image)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from error


#: PIL modes of 16-bit (and 32-bit integer) single-channel images; ``I`` is what older
#: Pillow versions and TIFF readers give for 16-bit grey, so its range is taken as 16-bit.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height


def rgb_image(image: Image.Image) -> Image.Image:
    """``image`` in RGB as a viewer shows it: its EXIF orientation applied
    (``PIL.ImageOps.exif_transpose``: a phone photo stored sideways with orientation 6 comes
    out upright) and 16-bit grey (:data:`WIDE_MODES`) scaled to 8 bits (``round(v / 257)``,
    so 65535 -> 255), not clipped at 255 as ``Image.convert`` does."""
    if image.getexif().get(_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in WIDE_MODES:
        values = np.asarray(image).astype(np.float64).clip(0, 65535)
        image = Image.fromarray(np.rint(values / 257).astype(np.uint8), "L")
    return image.convert("RGB")


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``image`` after its EXIF orientation (:func:`rgb_image`),
    from the header only."""
    width, height = image.size
    orientation = image.getexif().get(_ORIENTATION)
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def to_jsonable(value: object) -> object:
    """Plain JSON data: dataclasses, mappings, sequences, tensors and numpy arrays become
    dicts and lists; NaN and infinities become ``None`` (strict JSON); paths become strings;
    mapping keys become strings (floats as ``f"{key:g}"``). A TypeError names anything else."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {json_key(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__!r} to JSON")


def json_key(key: object) -> str:
    """A mapping key as JSON writes it: floats as ``f"{key:g}"`` (0.1 -> "0.1"), else ``str``."""
    if isinstance(key, float):
        return f"{key:g}"
    return str(key)


def write_json(path: PathLike, data: object) -> None:
    """Write ``data`` (see :func:`to_jsonable`) as indented strict JSON, keys in the order
    given, atomically: the same data gives the same bytes."""
    text = json.dumps(to_jsonable(data), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    """The JSON value in ``path``; FileNotFoundError / ValueError naming the file and
    ``what`` it should hold."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: {what} is not valid JSON ({error})") from error
    except (OSError, ValueError) as error:  # unreadable, not UTF-8
        raise ValueError(f"{path}: cannot read {what} ({error})") from error


def save_torch(path: PathLike, obj: Any) -> None:
    """``torch.save`` of tensors, dicts, lists and numbers, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def load_torch(path: PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (never unpickles code). A
    FileNotFoundError (``"<what> file <path> does not exist"``) or a ValueError (``"<path>:
    cannot load <what> with weights_only=True (...)"``) names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt, foreign or unsafe files
        raise ValueError(f"{path}: cannot load {what} with weights_only=True "
                         f"({_load_failure(error)})") from error


def _load_failure(error: Exception) -> str:
    """The reason in ``torch.load``'s error, one line: for the weights-only unpickler its own
    detail (``Unsupported operand 35``, ``Unsupported global: ...``), not torch's advice to
    retry with ``weights_only=False``, which loupe never does."""
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].strip()
        return f"not a file of tensors only: {detail}"
    return text.splitlines()[0] if text else type(error).__name__
