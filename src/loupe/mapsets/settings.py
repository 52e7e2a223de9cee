"""What a ``loupe maps`` run is: its options (:class:`MapsConfig`), what it did
(:class:`MapsResult`) and its description in ``maps.json`` (:func:`describe_run`): what
changes the maps, checked when a run resumes, apart from how much was done."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe import __version__
from loupe.data.spec import DatasetSpec
from loupe.models import Classifier
from loupe.registry import get_method

# Options that bound memory and never change the maps (tested for every chunked method): left
# out of maps.json, so a run can resume with another value (say, smaller chunks after
# running out of memory).
MEMORY_OPTIONS = ("chunk_size",)


@dataclass(frozen=True)
class MapsConfig:
    """Everything ``loupe maps`` needs (see its ``--help`` for each option). ``max_side``:
    images whose longer side is larger are explained at that side (None: no limit)."""

    dataset: DatasetSpec
    out: Path
    model: str
    weights: str | None = None
    method: str = "gradcam"
    options: dict[str, object] = field(default_factory=dict)
    target_layer: str | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    topk: int | None = None
    class_map: str | None = None
    label_offset: int | None = None
    size: int | None = None
    max_side: int | None = 1024
    batch_size: int = 8
    workers: int = 0
    amp: bool = False
    num_classes: int | None = None
    seed: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: str | None = None
    patch: str | None = None
    progress: bool = True

    def check(self) -> None:
        """A ValueError naming the first option out of range."""
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"--scales must be positive numbers, got {list(self.scales)}")
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"--scales has repeats: {list(self.scales)}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"--topk must be at least 1, got {self.topk}")
        if self.size is not None and self.size < 8:
            raise ValueError(f"--size must be at least 8 pixels, got {self.size}")
        if self.max_side is not None and self.max_side < 8:
            raise ValueError(f"--max-side must be at least 8 pixels (0: no limit), got "
                             f"{self.max_side}")
        get_method(self.method)


@dataclass(frozen=True)
class MapsResult:
    """What one process did: images in its share, maps written now, already there, left to
    other processes working on the same folder at the same time, time."""

    images: int
    written: int
    skipped: int
    seconds: float
    elsewhere: int = 0

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


#: What ``maps.json`` says in words when a resume finds these keys changed.
CHANGED = {"model_fingerprint": "the model's weights changed since the maps in this folder "
                                "were made, so they are stale"}


def describe_run(
    config: MapsConfig, classifier: Classifier, dataset: Any,
    correspondence: dict[str, Any], fingerprint: str | None = None,
) -> dict[str, Any]:
    """The ``maps.json`` of a run: what changes the maps (checked when a run resumes: method,
    options, model and its weights' fingerprint, data set, ...), deterministic (no times, no
    machine details). How much was done (``extent``: the most images a run covered so far)
    is added by :func:`loupe.mapsets.claims.record_run` and may grow on resume."""
    dataset_description = config.dataset.describe()
    dataset_description.pop("limit", None)  # how much, not how: "extent" says how many
    return {
        "format": "loupe maps 1: <id>.npz with maps (K, H, W) float16 divided by peak (K,) "
                  "float32, classes (K,) int64, scores (K,) float32, predicted () int64",
        "loupe": __version__,
        "method": config.method,
        "options": {k: _plain(v) for k, v in sorted(config.options.items())
                    if k not in MEMORY_OPTIONS},
        "target_layer": config.target_layer,
        "scales": list(config.scales),
        "flip": config.flip,
        "size": config.size,
        "max_side": config.max_side,
        "targets": f"top-{config.topk}" if config.topk else "image-level labels",
        "correspondence": correspondence,
        "classifier": classifier.description,
        "model_fingerprint": fingerprint,
        "mean": list(classifier.preprocessing.mean),
        "std": list(classifier.preprocessing.std),
        "amp": config.amp,
        "dataset": dataset_description,
        "class_names": list(dataset.class_names),
    }


def _plain(value: object) -> object:
    """An option value as JSON: numbers, strings, booleans and None as they are, sequences
    as lists, anything else as its repr."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return repr(value)
