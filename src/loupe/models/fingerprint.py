"""A model's fingerprint: what ``maps.json`` records so that a resumed run can tell whether
the weights changed since its maps were made."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from loupe.io import PathLike

_BLOCK = 1 << 20


def file_fingerprint(path: PathLike) -> str:
    """``"sha256:<hex>"`` of a file's bytes (what ``sha256sum`` prints), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def state_dict_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` of a state dict: every entry's name, dtype, shape and bytes, in the
    dict's order. The same weights give the same fingerprint on any device and whichever
    file they came from; one changed value changes it."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def classifier_fingerprint(model: torch.nn.Module, weights: str | None) -> str:
    """The fingerprint of a loaded classifier: of the weights file when ``weights`` names a
    file (``--weights FILE``), else of the model's state dict (loupe runs, torchvision weight
    names, ``random``). Call it before moving the model to another device (no copy is made
    then)."""
    if weights is not None and Path(weights).is_file():
        return file_fingerprint(weights)
    return state_dict_fingerprint(model.state_dict())
