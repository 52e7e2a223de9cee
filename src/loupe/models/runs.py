"""Model files of a loupe run folder: the weights (``model.pt``, a state dict loaded with
``weights_only=True``) beside a JSON description enough to rebuild the model and its input
normalisation (``model.json``), written atomically (:mod:`loupe.io`)::

    model.pt        the trained weights (state_dict only)
    model.json      {"kind": "classifier" | "segmenter", "model": {build arguments},
                     "preprocessing": {"mean", "std"}, "class_names": [...],
                     "label_offset": int, "input_size": int, "config": {training config}}

Training adds ``checkpoint.pt`` and ``history.json`` (:mod:`loupe.training.checkpoints`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from loupe.io import PathLike, read_json, save_torch, write_json
from loupe.models.networks import build_classifier, build_segmenter
from loupe.models.preprocessing import Preprocessing
from loupe.models.weights import read_state_dict

MODEL_FILE = "model.pt"
SPEC_FILE = "model.json"


def spec_path(model_path: PathLike) -> Path:
    """The JSON description beside a model file or inside a run folder."""
    path = Path(model_path)
    return path / SPEC_FILE if path.is_dir() else path.with_suffix(".json")


def weights_path(model_path: PathLike) -> Path:
    """The ``model.pt`` of a run folder, or ``model_path`` itself."""
    path = Path(model_path)
    return path / MODEL_FILE if path.is_dir() else path


def is_training_run(model: PathLike) -> bool:
    """True when ``model`` names a loupe run (a folder or a ``.pt`` with a ``model.json``)."""
    path = Path(model)
    if path.is_dir():
        return (path / SPEC_FILE).is_file()
    return path.is_file() and path.with_suffix(".json").is_file()


def save_model(folder: PathLike, model: nn.Module, spec: dict[str, Any]) -> Path:
    """Write ``model.pt`` (state_dict) and ``model.json`` (``spec``) into ``folder``."""
    folder = Path(folder)
    write_json(folder / SPEC_FILE, spec)
    path = folder / MODEL_FILE
    save_torch(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    return path


def load_model(path: PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model written by :func:`save_model` from its ``model.json`` and load its
    weights; ``path`` is the run folder or the ``.pt`` file. Returns ``(model in eval mode,
    spec)``; :func:`preprocessing_of` ``(spec)`` is its input normalisation."""
    spec = read_json(spec_path(path), "model description (model.json)")
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "classifier":
        model = build_classifier(**spec["model"], pretrained="none")
    elif kind == "segmenter":
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
    """The input normalisation recorded in a model description (at its ``input_size``)."""
    return Preprocessing.from_json(spec["preprocessing"], spec.get("input_size"))
