"""Model files: a ``state_dict`` (``.pt``, loaded with ``weights_only=True``) beside a JSON
description that is enough to rebuild the model and its preprocessing; and training state for
``--resume``. Everything is written atomically (:mod:`loupe.io`).

A run folder written by :func:`loupe.training.train_classifier` or ``train_segmenter``::

    model.pt        the trained weights (state_dict only)
    model.json      {"kind": "classifier" | "segmenter", "model": {build arguments},
                     "preprocessing": {"mean", "std"}, "class_names": [...],
                     "label_offset": int, "input_size": int, "config": {training config}}
    checkpoint.pt   {"epoch", "step", "model", "optimizer", "scheduler", "scaler", "history"}
    history.json    per-epoch loss and validation scores
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loupe.io import atomic_path
from loupe.training.transforms import Preprocessing

PathLike = str | os.PathLike[str]
MODEL_FILE = "model.pt"
SPEC_FILE = "model.json"
CHECKPOINT_FILE = "checkpoint.pt"


def save_torch(path: PathLike, obj: Any) -> None:
    """``torch.save`` of tensors, dicts, lists and numbers, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def load_torch(path: PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; FileNotFoundError / ValueError that
    name the file when it is missing or not a weights-only torch file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or pickled files
        raise ValueError(f"{path}: cannot read {what} as a weights-only torch file ({error})"
                         ) from error


def write_json(path: PathLike, data: Any) -> None:
    """Pretty JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: {what} is not valid JSON ({error})") from error


def spec_path(model_path: PathLike) -> Path:
    """The JSON description beside a model file or inside a run folder."""
    path = Path(model_path)
    return path / SPEC_FILE if path.is_dir() else path.with_suffix(".json")


def weights_path(model_path: PathLike) -> Path:
    """The ``model.pt`` of a run folder, or ``model_path`` itself."""
    path = Path(model_path)
    return path / MODEL_FILE if path.is_dir() else path


def save_model(folder: PathLike, model: nn.Module, spec: dict[str, Any]) -> Path:
    """Write ``model.pt`` (state_dict) and ``model.json`` (``spec``) into ``folder``."""
    folder = Path(folder)
    write_json(folder / SPEC_FILE, spec)
    path = folder / MODEL_FILE
    save_torch(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    return path


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pt`` file; dicts wrapped as ``{"state_dict": ...}`` or
    ``{"model": ...}`` (training checkpoints) are unwrapped."""
    state = load_torch(path, "weights file")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return state


def load_model(path: PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model written by :func:`save_model` from its ``model.json`` and load its
    weights; ``path`` is the run folder or the ``.pt`` file. Returns ``(model in eval mode,
    spec)``; ``Preprocessing.from_json(spec["preprocessing"])`` is its input normalisation."""
    spec = read_json(spec_path(path), "model description (model.json)")
    kind = spec.get("kind")
    if kind == "classifier":
        from loupe.training.classifier import build_classifier

        model = build_classifier(**spec["model"], pretrained="none")
    elif kind == "segmenter":
        from loupe.training.segmentation import build_segmenter

        model = build_segmenter(**spec["model"])
    else:
        raise ValueError(f"{spec_path(path)}: unknown model kind {kind!r} "
                         "(expected 'classifier' or 'segmenter')")
    state = read_state_dict(weights_path(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights_path(path)}: weights do not match the model in model.json "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.to(device).eval(), spec


def preprocessing_of(spec: dict[str, Any]) -> Preprocessing:
    """The input normalisation recorded in a model description."""
    return Preprocessing.from_json(spec["preprocessing"])


def save_run(out: PathLike, spec: dict[str, Any], model: nn.Module,
             optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, epoch: int,
             history: list[dict[str, Any]]) -> None:
    """After ``epoch`` epochs: ``model.pt`` + ``model.json``, the training state in
    ``checkpoint.pt`` (for ``--resume``) and ``history.json``, each written atomically."""
    out = Path(out)
    save_model(out, model, spec)
    save_torch(out / CHECKPOINT_FILE, {
        "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
        "model_spec": spec["model"],
    })
    write_json(out / "history.json", history)


def resume_run(out: PathLike, spec: dict[str, Any], model: nn.Module,
               optimizer: torch.optim.Optimizer, scheduler: Any,
               scaler: Any) -> tuple[int, list[dict[str, Any]]]:
    """Restore what :func:`save_run` wrote into the given objects; returns (epochs done,
    history). Errors name the file: no checkpoint, or one for a different model."""
    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = load_torch(path)
    if not isinstance(state, dict) or "epoch" not in state or "optimizer" not in state:
        raise ValueError(f"--resume: {path} is not a loupe training checkpoint")
    if state.get("model_spec") != spec["model"]:
        raise ValueError(f"--resume: {path} holds a different model {state.get('model_spec')} "
                         f"than the one configured {spec['model']}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    history_file = Path(out) / "history.json"
    history = read_json(history_file, "training history") if history_file.is_file() else []
    epoch = int(state["epoch"])
    return epoch, list(history)[:epoch]
