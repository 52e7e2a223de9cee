"""Training state of a run folder, for ``--resume``: beside the model files of
:mod:`loupe.models.runs` (``model.pt``, ``model.json``) a run holds::

    checkpoint.pt   {"epoch", "model", "optimizer", "scheduler", "scaler", "model_spec"}
    history.json    per-epoch loss and validation scores

Everything is written atomically (:mod:`loupe.io`) and read with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from loupe.io import PathLike, load_torch, read_json, save_torch, write_json
from loupe.models.runs import save_model

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"


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
    write_json(out / HISTORY_FILE, history)


def resume_run(out: PathLike, spec: dict[str, Any], model: nn.Module,
               optimizer: torch.optim.Optimizer, scheduler: Any,
               scaler: Any) -> tuple[int, list[dict[str, Any]]]:
    """Restore what :func:`save_run` wrote into the given objects; returns (epochs done,
    history). Errors name the file: no checkpoint, or one for a different model."""
    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = load_torch(path, "checkpoint")
    if not isinstance(state, dict) or "epoch" not in state or "optimizer" not in state:
        raise ValueError(f"--resume: {path} is not a loupe training checkpoint")
    if state.get("model_spec") != spec["model"]:
        raise ValueError(f"--resume: {path} holds a different model {state.get('model_spec')} "
                         f"than the one configured {spec['model']}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    history_file = Path(out) / HISTORY_FILE
    history = read_json(history_file, "training history") if history_file.is_file() else []
    epoch = int(state["epoch"])
    return epoch, list(history)[:epoch]
