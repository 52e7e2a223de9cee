"""State dicts: the one reader of weight files (``weights_only=True``), and what a state dict
says about a model (its classifier weight, its number of outputs, how it fails to fit)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from loupe.io import PathLike, load_torch


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (``torch.load(..., weights_only=True)``, on the CPU).

    Checkpoints that wrap it under ``"state_dict"`` or ``"model"`` (loupe's ``checkpoint.pt``)
    are unwrapped, and a ``"module."`` prefix on every key (DataParallel) is removed. Errors
    name the file: missing, not a weights-only torch file, or not a mapping of names to
    tensors."""
    loaded = load_torch(path, "weights")
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


def classifier_key(model: nn.Module) -> str | None:
    """The state-dict key of the final classifier weight (the last 2D+ weight)."""
    keys = [k for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() >= 2]
    return keys[-1] if keys else None


def num_outputs(model: nn.Module) -> int | None:
    """The number of classes of ``model`` (rows of its final classifier weight), None when it
    has no 2D+ weight."""
    key = classifier_key(model)
    return None if key is None else int(model.state_dict()[key].shape[0])


def describe_mismatch(
    path: Path, model_name: str, model: nn.Module, state: Mapping[str, torch.Tensor]
) -> str:
    """One line saying how ``state`` (from ``path``) does not fit ``model``."""
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


def state_fingerprint(model: nn.Module) -> str:
    """``sha256:<hex>`` of the model's state dict: every name, dtype, shape and value in key
    order. The same weights give the same fingerprint however they were loaded (an enum, a
    file, a seed); a single changed value changes it."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the floating-point entries of the state dict that hold NaN or Inf."""
    return [
        name for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
