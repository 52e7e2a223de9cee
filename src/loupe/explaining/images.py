"""The images of ``loupe explain``: finding them, reading them (a damaged image is skipped, not
fatal), the input the model sees of each (its *view*) and the picture an overlay is drawn on.

Views (``--view``):

- ``whole`` (default): the whole image, aspect kept, its shorter side resized to the
  preprocessing's ``resize`` (256 for torchvision's ImageNet weights: the scale the model was
  evaluated at before the centre crop), the longer side capped at ``max_side``;
- ``squash``: the whole image resized to ``size x size`` (models that need a fixed input size,
  such as torchvision's ViTs); the maps are stretched back to the image's aspect;
- ``crop``: torchvision's evaluation crop (resize, centre crop ``size``): the scores of the
  published accuracy, maps of the crop only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import functional as TF

from loupe.io import load_rgb
from loupe.models.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

# Whatever PIL reads (explain takes single photos; data sets use loupe.data's suffixes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
VIEWS = ("whole", "squash", "crop")
#: Long side of the picture an overlay is drawn on: smaller images are enlarged, larger reduced.
DISPLAY_SIDES = (384, 768)
#: Images enlarged by more than this factor to the model's input are reported.
UPSCALE_WARNING = 2.0


class ImageSkipped(ValueError):
    """One image that cannot be explained (damaged, too small): the run goes on without it."""


@dataclass(frozen=True)
class FoundImages:
    """Images to explain, and folder members that are damaged images (skipped, each a reason
    naming the file)."""

    paths: list[Path]
    damaged: list[tuple[Path, str]]


def collect_images(inputs: Sequence[str | Path], recursive: bool = False) -> FoundImages:
    """Image files named directly or found in folders (by suffix, sorted).

    A named file that is not a readable image is a ValueError (nothing has run yet). In a
    folder, members PIL does not recognise as any image format (a LICENSE.png that is text)
    are skipped with a warning; damaged images (a header PIL cannot parse) are skipped too and
    listed in ``damaged``; a folder without images is a ValueError."""
    found: list[Path] = []
    damaged: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            members = path.rglob("*") if recursive else path.iterdir()
            candidates = sorted(
                f for f in members
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
            )
            readable = []
            for f in candidates:
                problem = image_problem(f)
                if problem is None:
                    readable.append(f)
                elif problem.startswith("cannot identify image file"):
                    logger.warning("skipping %s: not an image", f)  # e.g. a LICENSE.png
                else:
                    logger.warning("skipping %s: cannot read image (%s)", f, problem)
                    damaged.append((f, f"cannot read image ({problem})"))
            if not readable and not damaged:
                raise ValueError(
                    f"no images found in {path} (looked for {', '.join(IMAGE_SUFFIXES)}"
                    f"{' in sub-folders too' if recursive else ''})"
                )
            found.extend(readable)
        elif path.is_file():
            problem = image_problem(path)
            if problem is not None:
                raise ValueError(f"{path}: cannot read image ({problem})")
            found.append(path)
        else:
            raise ValueError(f"{path}: no such image file or folder")
    return FoundImages(found, damaged)


def image_problem(path: Path) -> str | None:
    """None if PIL can identify ``path`` as an image (header only), else why not."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - reading the header is the check
    except UnidentifiedImageError:
        return f"cannot identify image file {path}"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return str(error) or type(error).__name__
    return None


def read_image(path: Path) -> Image.Image:
    """The RGB image (:func:`loupe.io.load_rgb`: EXIF orientation applied); an ImageSkipped
    naming the file when its pixels cannot be read (truncated, corrupt, too large)."""
    try:
        return load_rgb(path)
    except ValueError as error:
        raise ImageSkipped(str(error)) from error
    except Image.DecompressionBombError as error:
        raise ImageSkipped(f"{path}: cannot read image ({error})") from error


def input_size(height: int, width: int, view: str, preprocessing: Preprocessing,
               max_side: int, multiple: int = 1) -> tuple[int, int]:
    """``(h, w)`` of the model input of a ``height x width`` image in ``view`` (see the module
    docstring). The whole view follows ``torchvision.transforms.Resize(resize,
    max_size=max_side)``: shorter side ``resize``, longer ``int(resize * long / short)``, both
    reduced when that exceeds ``max_side``; with ``multiple`` both sides are then rounded to
    multiples of it (detectors pad to 32 inside, which would shift their maps)."""
    if view != "whole":
        return preprocessing.size, preprocessing.size
    short, long = sorted((height, width))
    new_short, new_long = preprocessing.resize, int(preprocessing.resize * long / short)
    if new_long > max_side:
        new_short, new_long = max(1, int(max_side * new_short / new_long)), max_side
    new_short, new_long = _rounded(new_short, multiple), _rounded(new_long, multiple)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def _rounded(side: int, multiple: int) -> int:
    return side if multiple == 1 else max(multiple, round(side / multiple) * multiple)


def capped(height: int, width: int, preprocessing: Preprocessing, max_side: int) -> bool:
    """Whether ``max_side`` reduces the whole view of a ``height x width`` image."""
    short, long = sorted((height, width))
    return int(preprocessing.resize * long / short) > max_side


def model_view(image: Image.Image, view: str, preprocessing: Preprocessing,
               size: tuple[int, int]) -> torch.Tensor:
    """What the model sees of ``image``: ``(3, h, w)`` uint8 at ``size`` (see
    :func:`input_size`)."""
    if view == "crop":
        return preprocessing.view(image)
    resized = TF.resize(image, list(size), interpolation=preprocessing.interpolation,
                        antialias=True)
    return TF.pil_to_tensor(resized)


def upscale_factor(height: int, width: int, view: str, preprocessing: Preprocessing,
                   size: tuple[int, int]) -> float:
    """How much the image is enlarged into the model input (< 1: reduced)."""
    if view == "crop":
        return preprocessing.resize / min(height, width)
    return max(size[0] / height, size[1] / width)


def mapped_region(height: int, width: int, view: str, preprocessing: Preprocessing
                  ) -> tuple[float, float]:
    """Pixels of the original image that a map covers, ``(h, w)``: the whole image, or for
    ``crop`` the part the centre crop takes."""
    if view != "crop":
        return float(height), float(width)
    side = min(height, width) * preprocessing.size / preprocessing.resize
    return side, side


def display_image(image: Image.Image, view: str, preprocessing: Preprocessing) -> torch.Tensor:
    """The picture an overlay is drawn on, ``(3, H, W)`` uint8: the whole image (the crop for
    ``crop``) with its long side brought into :data:`DISPLAY_SIDES` (enlarged with nearest
    neighbours, reduced with antialiasing)."""
    if view == "crop":  # the crop's region of the original, at the original's resolution
        side = round(mapped_region(image.height, image.width, view, preprocessing)[0])
        image = TF.center_crop(image, [max(1, side)] * 2)
    width, height = image.size
    low, high = DISPLAY_SIDES
    long = max(width, height)
    scale = low / long if long < low else high / long if long > high else 1.0
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
        image = image.resize(size, resample)
    return TF.pil_to_tensor(image)
