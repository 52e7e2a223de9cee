"""The one way to load a classifier: :func:`load_classifier`.

``model`` names either

- a loupe run (``RUN_DIR`` or ``RUN_DIR/model.pt`` with its ``model.json``, as ``loupe train``
  writes it): architecture, input normalisation, class names and the class correspondence
  (``label_offset``) come from ``model.json``; no ``weights``. This is also how a custom tiny
  model is loaded (``loupe train --backbone small``);
- or a torchvision classifier, with ``weights``: a weight enum name (``"IMAGENET1K_V1"``,
  ``"DEFAULT"``, which bring their preprocessing and class names), a state-dict file, or
  ``"random"`` (seeded initialisation, for tests and benchmarks).

The input preprocessing is the source's own (ImageNet's at 224 for state-dict and random
weights) with the user's options over it (:class:`~loupe.models.preprocessing.
PreprocessingOptions`), or exactly ``preprocessing`` when given. Errors are one line naming
the argument or file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from loupe.data.imagenet import default_class_names
from loupe.models.dense import (
    CLASSIFICATION,
    DETECTION,
    fit_detector,
    load_dense_model,
    model_task,
)
from loupe.models.preprocessing import (
    Preprocessing,
    PreprocessingOptions,
    preprocessing_from_weights,
)
from loupe.models.runs import is_training_run, load_model, preprocessing_of
from loupe.models.weights import num_outputs
from loupe.models.zoo import (
    apply_patch,
    check_model_name,
    model_from_state_dict,
    pretrained_model,
    random_model,
    weight_names,
    weights_enum,
)


@dataclass(frozen=True)
class Classifier:
    """A model ready to explain, with what is known about its input and outputs.

    model: the network in eval mode. preprocessing: see :class:`Preprocessing`.
    class_names: one name per output, or None when unknown. source: where the weights came
    from, in words. description: the same, JSON-ready (recorded in ``maps.json``).
    label_offset: output ``k`` is data-set class ``k + label_offset`` (loupe runs; None for
    torchvision models). input_size: the side a run was validated at, when known.
    task: ``"classification"``, or ``"segmentation"`` / ``"detection"`` for torchvision's dense
    models (:mod:`loupe.models.dense`), whose ``classes`` is their number of classes.
    """

    model: nn.Module
    preprocessing: Preprocessing
    class_names: tuple[str, ...] | None
    source: str
    description: dict[str, Any] = field(default_factory=dict)
    label_offset: int | None = None
    input_size: int | None = None
    task: str = CLASSIFICATION
    classes: int | None = None

    @property
    def num_outputs(self) -> int | None:
        """Rows of the final classifier weight (None when the model has none); a dense
        model's number of classes."""
        return self.classes if self.classes is not None else num_outputs(self.model)


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
        raise ValueError(f"{path}: --label-offset {offset} leaves no names ({len(lines)} lines)")
    return tuple(line.strip() for line in lines[offset:])


def load_classifier(
    model: str,
    weights: str | None = None,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    options: PreprocessingOptions | None = None,
    labels: tuple[str, ...] | None = None,
    labels_source: str = "labels",
    patch: str | None = None,
) -> Classifier:
    """The :class:`Classifier` that ``model`` and ``weights`` name (see the module docstring).

    ``preprocessing`` replaces the source's own; else ``options`` override it. ``labels``
    replace the class names an enum or a run brings and must have one name per output
    (``labels_source``, their file, names them in that error). ``patch`` is
    ``"PY_FILE:FUNC"``, called on the loaded model (:func:`~loupe.models.zoo.apply_patch`).
    A head of 1,000 (or 1,001) outputs without names of its own gets ImageNet's.
    """
    found = _from_run(model, weights) if is_training_run(model) else _from_torchvision(
        model, weights, num_classes, seed)
    options = options or PreprocessingOptions()
    if found.task != CLASSIFICATION:  # no crop: --size and --resize both name the short side
        side = options.resize or options.size
        options = replace(options, size=side, resize=side)
    chosen = preprocessing or options.apply(found.preprocessing)
    if found.task == DETECTION:
        fit_detector(found.model, chosen.resize)
    outputs = found.classes or num_outputs(found.model)
    if labels is not None and outputs is not None and len(labels) != outputs:
        raise ValueError(
            f"{labels_source}: {len(labels)} class names for a model with {outputs} outputs "
            "(for a labels file whose line 0 is 'background', use --label-offset 1)"
        )
    network, source, description = found.model, found.source, found.description
    if patch:
        network = apply_patch(network, patch).eval()
        source, description = f"{source} + {patch}", {**description, "patch": patch}
    names = labels or found.class_names or default_class_names(outputs)
    return Classifier(network, chosen, names, source, description, found.label_offset,
                      found.input_size, found.task, found.classes)


@dataclass(frozen=True)
class _Found:
    """What a source brings before the caller's options: ``preprocessing`` is None for
    state-dict and random weights."""

    model: nn.Module
    preprocessing: Preprocessing | None
    class_names: tuple[str, ...] | None
    source: str
    description: dict[str, Any]
    label_offset: int | None = None
    input_size: int | None = None
    task: str = CLASSIFICATION
    classes: int | None = None


def _from_run(model: str, weights: str | None) -> _Found:
    if weights is not None:
        raise ValueError(f"--model {model} is a loupe training run (model.json); it brings "
                         "its own weights, so leave out --weights")
    network, spec = load_model(model)
    names = tuple(spec["class_names"]) if spec.get("class_names") else None
    description = {"model": os.fspath(model), "kind": "loupe training run",
                   "architecture": spec.get("model")}
    return _Found(network, preprocessing_of(spec), names, os.fspath(model), description,
                  int(spec.get("label_offset", 0)), spec.get("input_size"))


def _from_torchvision(model: str, weights: str | None, num_classes: int | None,
                      seed: int) -> _Found:
    if Path(model).exists():
        raise ValueError(f"--model {model}: a path but not a loupe training run (no "
                         "model.json beside it); give a torchvision name and --weights FILE")
    if weights is None:
        raise ValueError(f"--model {model} needs --weights (an enum name such as "
                         "IMAGENET1K_V1, a state-dict file, or 'random')")
    if model_task(model) != CLASSIFICATION:
        dense = load_dense_model(model, weights, num_classes, seed)
        description = {"model": model, "weights": weights, "source": dense.source,
                       "task": dense.task, "num_classes": dense.num_classes}
        return _Found(dense.network, dense.preprocessing, dense.class_names, dense.source,
                      description, task=dense.task, classes=dense.num_classes)
    check_model_name(model)
    enum = None if Path(weights).is_file() else weights_enum(model, weights)
    own, names = None, None
    if enum is not None:
        network = pretrained_model(model, enum)
        own = preprocessing_from_weights(enum)
        names = tuple(enum.meta.get("categories") or ()) or None
        source = f"{type(enum).__name__}.{enum.name}"
    elif weights.lower() == "random":
        network = random_model(model, num_classes or 1000, seed)
        source = f"random (seed {seed})"
    elif Path(weights).is_file() or os.sep in weights or Path(weights).suffix:
        network = model_from_state_dict(model, weights, num_classes)
        source = str(weights)
    else:
        choices = ", ".join(weight_names(model)) or "none"
        raise ValueError(
            f"--weights {weights!r} is neither a file nor a weight name for {model} "
            f"(torchvision has: {choices}; or 'random')"
        )
    description = {"model": model, "weights": weights, "source": source}
    return _Found(network, own, names, source, description)
