"""Torchvision classifiers by name, their weights, and the preprocessing that goes with them.

Three sources of weights:

- a torchvision weight enum name (``"IMAGENET1K_V1"``, ``"DEFAULT"``): the weights bring their
  own preprocessing (``weights.transforms()``) and class names (``weights.meta["categories"]``);
- a state-dict file, loaded with ``torch.load(path, weights_only=True)``: preprocessing and
  class names come from the caller (:func:`preprocessing_from_options`, :func:`read_labels`);
- ``"random"``: seeded random initialisation, for tests and benchmarks.

Everything here raises ``ValueError`` / ``FileNotFoundError`` with one line that names the file
or argument and the problem; the CLI turns those into exit status 2.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import logging
import math
import operator
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms._presets import ImageClassification

logger = logging.getLogger(__name__)

#: Shorter side before the centre crop, relative to the crop (torchvision's 256 / 224).
RESIZE_RATIO = 256 / 224


@dataclass(frozen=True)
class Preprocessing:
    """How a PIL image becomes model input: resize the shorter side to ``resize``, centre-crop
    ``size x size``, scale RGB to [0, 1], then ``(x - mean) / std`` per channel.

    :meth:`view` gives the crop the model sees as ``(3, size, size)`` uint8 (what overlays are
    drawn on); :meth:`normalize` turns a batch of views into model input on the views' device.
    """

    size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: InterpolationMode = InterpolationMode.BILINEAR

    def view(self, image: Image.Image) -> torch.Tensor:
        """The centre crop the model sees, ``(3, size, size)`` uint8."""
        resized = TF.resize(image, [self.resize], interpolation=self.interpolation, antialias=True)
        return TF.pil_to_tensor(TF.center_crop(resized, [self.size, self.size]))

    def normalize(self, views: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 views -> float32 model input, on the views' device."""
        mean = torch.tensor(self.mean, device=views.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=views.device).view(-1, 1, 1)
        return (views.float() / 255 - mean) / std

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> ``(3, size, size)`` float32 model input."""
        return self.normalize(self.view(image)[None])[0]


@dataclass(frozen=True)
class Classifier:
    """A model ready to explain, with what is known about its input and outputs.

    model: the network in eval mode. preprocessing: see :class:`Preprocessing`.
    class_names: one name per output, or None when unknown. source: where the weights came from.
    """

    model: nn.Module
    preprocessing: Preprocessing
    class_names: tuple[str, ...] | None
    source: str


def model_names() -> list[str]:
    """Names of torchvision's classification models (``resnet50``, ``mobilenet_v2``, ...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_model_name(name: str) -> None:
    """A ValueError naming close matches when ``name`` is not a torchvision classifier."""
    names = model_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see torchvision.models"
        raise ValueError(f"unknown model {name!r}{hint}")


def weights_enum(model_name: str, weights: str) -> WeightsEnum | None:
    """The torchvision weight enum member called ``weights`` (``"IMAGENET1K_V1"``, ``"DEFAULT"``,
    ``"ResNet50_Weights.IMAGENET1K_V1"``) for ``model_name``, or None if there is none by that
    name."""
    check_model_name(model_name)
    enum = torchvision.models.get_model_weights(model_name)
    try:
        return enum.verify(weights)
    except (KeyError, ValueError, TypeError):
        return None


def weight_names(model_name: str) -> list[str]:
    """The weight enum names torchvision offers for ``model_name``."""
    return list(torchvision.models.get_model_weights(model_name).__members__)


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
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
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
    return (-b / a,), (1 / a,)


def read_labels(path: str | os.PathLike[str], offset: int = 0) -> tuple[str, ...]:
    """Class names from a text file, one per line, skipping the first ``offset`` lines (1 for
    files whose line 0 is ``background``). Trailing blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read labels ({error})") from error
    while lines and not lines[-1].strip():
        lines.pop()
    if offset < 0 or offset >= len(lines):
        raise ValueError(f"{path}: --labels-offset {offset} leaves no names ({len(lines)} lines)")
    return tuple(line.strip() for line in lines[offset:])


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (``torch.load(..., weights_only=True)``, on the CPU).

    Checkpoints that wrap it under ``"state_dict"`` or ``"model"`` are unwrapped, and a
    ``"module."`` prefix on every key (DataParallel) is removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or unsafe files
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: cannot load weights with weights_only=True ({first})") from error
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise ValueError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    state = dict(loaded)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _classifier_key(model: nn.Module) -> str | None:
    """The state-dict key of the final classifier weight (the last 2D+ weight)."""
    keys = [k for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() >= 2]
    return keys[-1] if keys else None


def _describe_mismatch(
    path: Path, model_name: str, model: nn.Module, state: Mapping[str, torch.Tensor]
) -> str:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[0]})")
    return f"{path}: not a state dict for {model_name}: " + "; ".join(parts or ["keys differ"])


def model_from_state_dict(
    model_name: str, path: str | os.PathLike[str], num_classes: int | None = None
) -> nn.Module:
    """``model_name`` with the state dict in ``path``. Without ``num_classes`` the number of
    outputs is read from the file's classifier weight (a fine-tuned 20-class ResNet loads)."""
    check_model_name(model_name)
    path = Path(path)
    state = load_state_dict_file(path)
    model = torchvision.models.get_model(model_name, weights=None, num_classes=num_classes or 1000)
    key = _classifier_key(model)
    if num_classes is None and key is not None and key in state:
        found, expected = state[key].shape, model.state_dict()[key].shape
        if found[1:] == expected[1:] and found[0] != expected[0]:
            logger.info("%s: %d classes (from %s)", path, found[0], key)
            model = torchvision.models.get_model(model_name, weights=None, num_classes=found[0])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(_describe_mismatch(path, model_name, model, state)) from error
    return model.eval()


def random_model(model_name: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """``model_name`` with torchvision's random initialisation drawn from ``seed`` (the global
    random state is left as it was)."""
    check_model_name(model_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.get_model(model_name, weights=None, num_classes=num_classes)
    return model.eval()


def pretrained_model(model_name: str, weights: WeightsEnum) -> nn.Module:
    """``model_name`` with torchvision weights (from the torch hub cache, or downloaded)."""
    try:
        return torchvision.models.get_model(model_name, weights=weights).eval()
    except OSError as error:  # URLError and missing files are OSErrors
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise ValueError(
            f"{model_name} weights {weights} are not in the torch hub cache ({hub}) and could "
            f"not be downloaded ({error}); download them once or pass --weights PATH"
        ) from error


def apply_patch(model: nn.Module, spec: str) -> nn.Module:
    """Call ``FUNC(model)`` from ``spec = "PY_FILE:FUNC"`` and return the patched model (the
    function's return value if it is a module, else ``model``). Runs the file's code: only
    for files the user trusts, like any Python script they run."""
    file, sep, name = spec.rpartition(":")
    if not sep or not file or not name.isidentifier():
        raise ValueError(f"--patch {spec!r} must be PY_FILE:FUNCTION, e.g. fix.py:tf_same_padding")
    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"patch file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_loupe_patch_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{path}: cannot import as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        raise ValueError(f"{path}: cannot import ({type(error).__name__}: {error})") from error
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"{path}: has no function {name!r}")
    result = function(model)
    return result if isinstance(result, nn.Module) else model


def load_classifier(
    model_name: str,
    weights: str,
    *,
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
    labels: tuple[str, ...] | None = None,
    labels_source: str = "labels",
    seed: int = 0,
) -> Classifier:
    """A :class:`Classifier` from a model name and ``weights`` (an enum name, a state-dict
    path, or ``"random"``).

    ``preprocessing`` and ``labels`` override what an enum brings; for a file or random weights
    they default to ImageNet's mean/std at 224 and no class names. ``labels`` must have one name
    per model output; ``labels_source`` (their file) names them in that error."""
    check_model_name(model_name)
    enum = None if Path(weights).is_file() else weights_enum(model_name, weights)
    if enum is not None:
        model = pretrained_model(model_name, enum)
        preprocessing = preprocessing or preprocessing_from_weights(enum)
        labels = labels or tuple(enum.meta.get("categories") or ()) or None
        source = f"{type(enum).__name__}.{enum.name}"
    elif weights.lower() == "random":
        model = random_model(model_name, num_classes or 1000, seed)
        source = f"random (seed {seed})"
    elif Path(weights).is_file() or os.sep in weights or Path(weights).suffix:
        model = model_from_state_dict(model_name, weights, num_classes)
        source = str(weights)
    else:
        names = ", ".join(weight_names(model_name)) or "none"
        raise ValueError(
            f"--weights {weights!r} is neither a file nor a weight name for {model_name} "
            f"(torchvision has: {names}; or 'random')"
        )
    preprocessing = preprocessing or preprocessing_from_options()
    outputs = _num_outputs(model)
    if labels is not None and outputs is not None and len(labels) != outputs:
        raise ValueError(
            f"{labels_source}: {len(labels)} class names for a model with {outputs} outputs "
            "(for a labels file whose line 0 is 'background', use --labels-offset 1)"
        )
    return Classifier(model, preprocessing, labels, source)


def _num_outputs(model: nn.Module) -> int | None:
    key = _classifier_key(model)
    return None if key is None else int(model.state_dict()[key].shape[0])
