"""What a map folder guesses, for CAM's ILSVRC localization error (:mod:`loupe.metrics.
localization`): an image's ranked ``(class, box)`` guesses from its map file.

A folder made with ``loupe maps --topk K`` (``"targets": "top-K"`` in its ``maps.json``) holds
the maps of each image's K best classes with their scores: the guesses are those classes by
score (at most 5), each boxed from its own map. A folder of maps of the image-level labels has
one guess, the classifier's top-1 class (the file's ``predicted``), boxed from its map when it
is one of the labels (when it is not, the guess names a class the image does not show).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from loupe.mapsets.files import read_run_description
from loupe.metrics.boxes import EMPTY_BOX
from loupe.metrics.localization import GuessRecord, cam_box, guess_ious, heuristic_guesses

MAX_GUESSES = 5  # ILSVRC's


def maps_topk(folder: Path) -> int | None:
    """K when ``folder`` holds the maps of each image's K best classes (its ``maps.json``
    records ``"targets": "top-K"``); None for maps of the image-level labels or a folder
    without ``maps.json``."""
    path = Path(folder) / "maps.json"
    if not path.is_file():
        return None
    targets = read_run_description(path, "maps.json").get("targets")
    if isinstance(targets, str) and targets.startswith("top-") and targets[4:].isdigit():
        return int(targets[4:])
    return None


def read_ranking(path: Path) -> tuple[int, torch.Tensor]:
    """The ``predicted`` class and the maps' ``scores`` ``(K,)`` of a map file (a ValueError
    naming the file when they are missing)."""
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("predicted", "scores") if k not in data.files]
        if missing:
            raise ValueError(f"{path}: no {' or '.join(repr(k) for k in missing)} (top-1 "
                             "localization needs map files written by loupe maps)")
        return int(data["predicted"]), torch.from_numpy(data["scores"].astype(np.float32))


def ranked_guesses(
    maps: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, predicted: int,
    topk: int | None,
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """An image's guesses from its map file (``maps`` ``(K, H, W)``, ``classes`` and
    ``scores`` ``(K,)``): ``(classes (G,), G maps)``, see the module docstring; a map is None
    when the file has none for the guessed class."""
    if topk:
        order = torch.sort(scores, descending=True, stable=True).indices[:MAX_GUESSES]
        return classes[order], [maps[int(i)] for i in order]
    if predicted < 0:  # no data-set class has a counterpart in the classifier
        return torch.zeros(0, dtype=torch.long), []
    where = (classes == predicted).nonzero().flatten()
    return torch.tensor([predicted]), [maps[int(where[0])] if where.numel() else None]


def guess_records(
    guessed: torch.Tensor, guess_maps: list[torch.Tensor | None],
    gt_boxes: Mapping[int, torch.Tensor], *, threshold: float = 0.2, heuristic: bool = False,
) -> dict[int, GuessRecord]:
    """Each ground-truth class (``gt_boxes``: class -> inclusive boxes ``(M, 4)``) against the
    guesses: CAM's box of each guess's map at ``threshold`` of its maximum, and with
    ``heuristic`` the paper's five loose/tight guesses of the first three maps."""
    boxes = torch.stack([
        cam_box(m, threshold).cpu() if m is not None else torch.tensor(EMPTY_BOX)
        for m in guess_maps
    ]) if guess_maps else torch.zeros((0, 4), dtype=torch.long)
    extra = heuristic_guesses(guessed, guess_maps) if heuristic else None
    records = {}
    for label, gt in gt_boxes.items():
        match, iou = guess_ious(guessed, boxes, label, gt)
        tight_loose = guess_ious(*extra, label, gt)[1] if extra is not None else None
        records[label] = GuessRecord(match, iou, tight_loose)
    return records
