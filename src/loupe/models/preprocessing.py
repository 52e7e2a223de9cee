"""How an image becomes model input: :class:`Preprocessing` (resize, centre crop, mean/std), and
where it comes from: a torchvision weight enum, explicit options, or an affine ``--scale``
expression such as ``"x*2-1"``."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image
from torchvision.models import WeightsEnum
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms._presets import ImageClassification

#: Shorter side before the centre crop, relative to the crop (torchvision's 256 / 224).
RESIZE_RATIO = 256 / 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The ``--scale`` rules ``loupe train`` accepts (TF-slim models: ``x*2-1``; none: ``x``).
NAMED_SCALES = ("x*2-1", "x")


@dataclass(frozen=True)
class Preprocessing:
    """How a PIL image becomes model input: resize the shorter side to ``resize``, centre-crop
    ``size x size``, scale RGB to [0, 1], then ``(x - mean) / std`` per channel. The
    defaults are torchvision's ImageNet preprocessing at 224.

    :meth:`view` gives the crop the model sees as ``(3, size, size)`` uint8 (what overlays are
    drawn on); :meth:`normalize` turns a batch of views into model input; calling it on a float
    tensor in [0, 1] (training, where images are resized by the augmentation) normalises only.
    """

    size: int = 224
    resize: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: InterpolationMode = InterpolationMode.BILINEAR

    @classmethod
    def imagenet(cls) -> Preprocessing:
        """ImageNet's mean/std at 224 (the default)."""
        return cls()

    @classmethod
    def from_scale(cls, rule: str) -> Preprocessing:
        """The mean/std of a named ``--scale`` rule (:data:`NAMED_SCALES`) of RGB in [0, 1];
        a ValueError listing the rules otherwise."""
        if rule.replace(" ", "") not in NAMED_SCALES:
            raise ValueError(f"unknown scale rule {rule!r}; choose one of: "
                             f"{', '.join(NAMED_SCALES)}")
        (mean,), (std,) = mean_std_from_scale(rule)
        return cls(mean=(mean,) * 3, std=(std,) * 3)

    def view(self, image: Image.Image) -> torch.Tensor:
        """The centre crop the model sees, ``(3, size, size)`` uint8."""
        resized = TF.resize(image, [self.resize], interpolation=self.interpolation, antialias=True)
        return TF.pil_to_tensor(TF.center_crop(resized, [self.size, self.size]))

    def normalize(self, views: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 views -> float32 model input, on the views' device."""
        return self(views.float() / 255)

    def __call__(self, images: Image.Image | torch.Tensor) -> torch.Tensor:
        """A PIL image -> its centre crop as ``(3, size, size)`` float32 model input; a float
        tensor ``(..., 3, H, W)`` in [0, 1] -> ``(x - mean) / std`` in its dtype and device."""
        if isinstance(images, Image.Image):
            return self.normalize(self.view(images)[None])[0]
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device)[:, None, None]
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device)[:, None, None]
        return (images - mean) / std

    def to_json(self) -> dict[str, list[float]]:
        """The normalisation as ``model.json`` records it: ``{"mean": [...], "std": [...]}``."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, data: dict[str, Any], size: int | None = None) -> Preprocessing:
        """The inverse of :meth:`to_json`; ``size`` (the input side a run recorded) sets the
        crop, with torchvision's resize ratio."""
        if size is None:
            return cls(mean=tuple(data["mean"]), std=tuple(data["std"]))
        return cls(size=size, resize=round(size * RESIZE_RATIO), mean=tuple(data["mean"]),
                   std=tuple(data["std"]))


def preprocessing_from_weights(weights: WeightsEnum) -> Preprocessing:
    """The preprocessing of a torchvision weight enum, identical to ``weights.transforms()``."""
    transform = weights.transforms()
    if not isinstance(transform, ImageClassification):
        raise ValueError(f"{weights}: not an image-classification weight ({type(transform)})")
    return Preprocessing(
        size=transform.crop_size[0],
        resize=transform.resize_size[0],
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation,
    )


def preprocessing_from_options(
    size: int = 224,
    resize: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    scale: str | None = None,
) -> Preprocessing:
    """Preprocessing from explicit options: ``mean``/``std`` (of RGB in [0, 1]) or an affine
    ``scale`` expression of ``x`` in [0, 1] such as ``"x*2-1"``; neither means ImageNet's
    mean/std. ``resize`` defaults to ``round(size * 256 / 224)`` (torchvision's ratio)."""
    if size < 1:
        raise ValueError(f"--size must be a positive number of pixels, got {size}")
    if scale is not None and (mean is not None or std is not None):
        raise ValueError("give either --scale or --mean/--std, not both")
    if scale is not None:
        mean, std = mean_std_from_scale(scale)
    if (mean is None) != (std is None):
        raise ValueError("--mean and --std go together: give both or neither")
    if mean is None or std is None:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if len(mean) not in (1, 3) or len(std) not in (1, 3):
        raise ValueError(f"--mean/--std need 1 or 3 values, got {len(mean)} and {len(std)}")
    if any(s == 0 for s in std):
        raise ValueError(f"--std must not contain 0, got {std}")
    mean3 = tuple(float(m) for m in (mean * 3 if len(mean) == 1 else mean))
    std3 = tuple(float(s) for s in (std * 3 if len(std) == 1 else std))
    resize = round(size * RESIZE_RATIO) if resize is None else resize
    if resize < size:
        raise ValueError(f"--resize ({resize}) must be at least --size ({size})")
    return Preprocessing(size=size, resize=resize, mean=mean3, std=std3)


@dataclass(frozen=True)
class PreprocessingOptions:
    """What the command line asks for (``--size --resize --mean --std --scale``); None = not
    given. :meth:`apply` resolves it against the preprocessing a model brings."""

    size: int | None = None
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: str | None = None

    def given(self) -> bool:
        return any(v is not None for v in (self.size, self.resize, self.mean, self.std,
                                           self.scale))

    def apply(self, own: Preprocessing | None) -> Preprocessing:
        """``own`` (a weight enum's or a run's; None for state-dict or random weights) with
        the given options overriding it: mean/std (or scale) replace both of its mean/std,
        ``size`` its crop (and the resize, unless given), the interpolation stays."""
        if own is None:
            return preprocessing_from_options(size=self.size or 224, resize=self.resize,
                                              mean=self.mean, std=self.std, scale=self.scale)
        if not self.given():
            return own
        mean, std = self.mean, self.std
        if self.scale is None and mean is None and std is None:
            mean, std = own.mean, own.std
        size = self.size or own.size
        resize = self.resize or (own.resize if self.size is None else None)
        return replace(preprocessing_from_options(size=size, resize=resize, scale=self.scale,
                                                  mean=mean, std=std),
                       interpolation=own.interpolation)


_AFFINE_OPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}


def mean_std_from_scale(expression: str) -> tuple[tuple[float], tuple[float]]:
    """``mean``, ``std`` such that ``(x - mean) / std`` equals an affine expression of ``x``.

    ``"x*2-1"`` -> ``(0.5,), (0.5,)``; ``"(x*255-127.5)/127.5"`` gives the same. Only numbers,
    ``x``, ``+ - * /`` and parentheses are accepted; the result must be ``a*x + b`` with
    ``a != 0``."""
    def affine(node: ast.AST) -> tuple[float, float]:  # (a, b) of a*x + b
        if isinstance(node, ast.Name) and node.id == "x":
            return 1.0, 0.0
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return 0.0, float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            a, b = affine(node.operand)
            return (-a, -b) if isinstance(node.op, ast.USub) else (a, b)
        if isinstance(node, ast.BinOp) and type(node.op) in _AFFINE_OPS:
            (a1, b1), (a2, b2) = affine(node.left), affine(node.right)
            if isinstance(node.op, ast.Add | ast.Sub):
                op = _AFFINE_OPS[type(node.op)]
                return op(a1, a2), op(b1, b2)
            if isinstance(node.op, ast.Mult) and (a1 == 0 or a2 == 0):
                return a1 * b2 + a2 * b1, b1 * b2
            if isinstance(node.op, ast.Div) and a2 == 0 and b2 != 0:
                return a1 / b2, b1 / b2
        raise ValueError("not affine")

    try:
        a, b = affine(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        a, b = 0.0, 0.0
    if a == 0 or not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(
            f"--scale {expression!r} is not an affine expression of x such as 'x*2-1' "
            "(numbers, x, + - * / and parentheses)"
        )
    return (-b / a + 0.0,), (1 / a,)  # + 0.0: no negative zero for "x"
