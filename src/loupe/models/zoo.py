"""Torchvision classifiers by name and their weights: a weight enum name (``"IMAGENET1K_V1"``,
``"DEFAULT"``), a state-dict file (``weights_only=True``) or ``"random"`` (seeded), and the
``--patch PY_FILE:FUNC`` hook applied after loading.

Everything here raises ``ValueError`` / ``FileNotFoundError`` with one line that names the file
or argument and the problem; the CLI turns those into exit status 2.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from loupe.models.weights import classifier_key, describe_mismatch, read_state_dict

logger = logging.getLogger(__name__)


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


def model_from_state_dict(
    model_name: str, path: str | os.PathLike[str], num_classes: int | None = None
) -> nn.Module:
    """``model_name`` with the state dict in ``path``. Without ``num_classes`` the number of
    outputs is read from the file's classifier weight (a fine-tuned 20-class ResNet loads)."""
    check_model_name(model_name)
    path = Path(path)
    state = read_state_dict(path)
    model = torchvision.models.get_model(model_name, weights=None, num_classes=num_classes or 1000)
    key = classifier_key(model)
    if num_classes is None and key is not None and key in state:
        found, expected = state[key].shape, model.state_dict()[key].shape
        if found[1:] == expected[1:] and found[0] != expected[0]:
            logger.info("%s: %d classes (from %s)", path, found[0], key)
            model = torchvision.models.get_model(model_name, weights=None, num_classes=found[0])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(describe_mismatch(path, model_name, model, state)) from error
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
