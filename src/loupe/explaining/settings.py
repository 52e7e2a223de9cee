"""What a ``loupe explain`` run is asked to do (:class:`ExplainConfig`), the model it loads
(refusing weights with NaN or Inf), and the settings recorded in ``explain.json``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe.explaining.images import VIEWS
from loupe.mapsets.generate import MEMORY_OPTIONS
from loupe.models import Classifier, PreprocessingOptions, load_classifier, read_labels
from loupe.models.weights import nonfinite_parameters, state_fingerprint
from loupe.registry import get_method
from loupe.reports.overlay import colormap_table

SCORE_KINDS = ("softmax", "sigmoid", "logit")
#: The smallest --max-side: below it most networks have no spatial map left.
MIN_SIDE = 32


@dataclass(frozen=True)
class ExplainConfig:
    """Everything ``loupe explain`` needs (see its ``--help`` for each option)."""

    inputs: tuple[str, ...]
    out: Path
    model: str
    weights: str | None = None
    method: str = "gradcam"
    options: dict[str, object] = field(default_factory=dict)
    method_label: str | None = None
    target_layer: str | None = None
    targets: tuple[str, ...] | None = None
    topk: int | None = None
    view: str = "whole"
    max_side: int = 1024
    size: int | None = None
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: str | None = None
    labels: Path | None = None
    label_offset: int = 0
    num_classes: int | None = None
    seed: int = 0
    patch: str | None = None
    scores: str = "softmax"
    colormap: str = "jet"
    alpha: float = 0.5
    batch_size: int = 8
    amp: bool = False
    recursive: bool = False
    device: str | None = None

    @property
    def label(self) -> str:
        """The method as named in file names and ``explain.json``: ``method_label`` (the
        :func:`~loupe.method_specs.method_slug` of ``--method``, with a spec's own options)
        or the method's name."""
        return self.method_label or self.method

    def check(self) -> None:
        """A ValueError naming the first option out of range."""
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.targets and self.topk:
            raise ValueError("give --target or --topk, not both")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"--topk must be at least 1, got {self.topk}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.view not in VIEWS:
            raise ValueError(f"--view must be one of {', '.join(VIEWS)}, got {self.view!r}")
        if self.max_side < MIN_SIDE:
            raise ValueError(f"--max-side must be at least {MIN_SIDE}, got {self.max_side}")
        if self.scores not in SCORE_KINDS:
            raise ValueError(f"--scores must be one of {', '.join(SCORE_KINDS)}")
        colormap_table(self.colormap)  # an unknown colormap fails here
        get_method(self.method)


def load_model(config: ExplainConfig) -> Classifier:
    """The model, preprocessing and class names of ``config``; a ValueError naming the weights
    when any of them is NaN or Inf (every output would be)."""
    labels = read_labels(config.labels, config.label_offset) if config.labels else None
    classifier = load_classifier(
        config.model, config.weights, num_classes=config.num_classes, seed=config.seed,
        options=PreprocessingOptions(size=config.size, resize=config.resize, mean=config.mean,
                                     std=config.std, scale=config.scale),
        labels=labels, labels_source=str(config.labels), patch=config.patch,
    )
    bad = nonfinite_parameters(classifier.model)
    if bad:
        total = len(classifier.model.state_dict())
        raise ValueError(
            f"--model {config.model} --weights {config.weights}: {len(bad)} of {total} weight "
            f"tensors hold NaN or Inf (e.g. {bad[0]}); every output would be NaN"
        )
    return classifier


def run_settings(config: ExplainConfig, classifier: Classifier
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings of the output folder and of the method, as ``explain.json`` records them
    (everything that changes an output file other than its image, method and target)."""
    prep = classifier.preprocessing
    names = classifier.class_names
    settings = {
        "model": classifier.description,
        "fingerprint": state_fingerprint(classifier.model),
        "task": classifier.task,
        "preprocessing": {
            "view": config.view, "resize": prep.resize,
            "size": None if config.view == "whole" else prep.size,
            "max_side": config.max_side if config.view == "whole" else None,
            "mean": list(prep.mean), "std": list(prep.std),
            "interpolation": prep.interpolation.value,
        },
        "class_names": None if names is None else {
            "count": len(names),
            "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        },
        "scores": config.scores if classifier.task != "detection" else "detection score",
        "amp": config.amp,
        "overlay": {"colormap": config.colormap, "alpha": config.alpha},
    }
    options = {k: v for k, v in sorted(config.options.items()) if k not in MEMORY_OPTIONS}
    return settings, {"options": options, "target_layer": config.target_layer or "auto"}
