"""The classifier a data-set run explains, and how its outputs correspond to data-set classes.

Two ways to name a model:

- a loupe training run: ``--model RUN_DIR`` (or ``RUN_DIR/model.pt``), as written by
  ``loupe train`` (``model.json`` beside ``model.pt``). Architecture, input normalisation and
  the class correspondence (``label_offset``) come from ``model.json``; no ``--weights``.
  This is also how a custom tiny model is loaded (``loupe train --backbone small``).
- a torchvision name with ``--weights`` (an enum name, a state-dict file or ``random``),
  through :func:`loupe.models.load_classifier`; normalisation from the weights' enum or
  ``--mean/--std/--scale`` (ImageNet's by default).

The correspondence is a :data:`loupe.data.ClassMapping`: for each data-set class the set of
classifier outputs that stand for it. It comes from a class map (``--class-map
coco_to_imagenet`` or a JSON file), from an offset (output ``k`` is data-set class
``k + offset``: ``model.json``'s ``label_offset``, ``--label-offset``, or inferred: 1 when the
model has one output per non-background class, 0 when one per class).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from loupe.data.mapping import ClassMapping, load_class_map

BACKGROUND_NAMES = ("background", "bg", "_background_")


@dataclass(frozen=True)
class LoadedClassifier:
    """A model in eval mode with its input normalisation and a JSON-ready description.

    mean, std: per-channel normalisation of RGB in [0, 1]. label_offset: the offset
    ``model.json`` records (None for torchvision models). input_size: the side the model was
    trained/validated at, when known.
    """

    model: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_outputs: int
    description: dict[str, Any]
    label_offset: int | None = None
    input_size: int | None = None


def is_training_run(model: str) -> bool:
    """True when ``model`` names a loupe training run (a folder or a ``.pt`` with a
    ``model.json``)."""
    path = Path(model)
    if path.is_dir():
        return (path / "model.json").is_file()
    return path.is_file() and path.with_suffix(".json").is_file()


def load_pipeline_classifier(
    model: str,
    weights: str | None,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: str | None = None,
    patch: str | None = None,
) -> LoadedClassifier:
    """Load the classifier named by ``--model``/``--weights`` (see the module docstring)."""
    from loupe.models import (
        apply_patch,
        load_classifier,
        preprocessing_from_options,
        preprocessing_from_weights,
        weights_enum,
    )

    if is_training_run(model):
        if weights is not None:
            raise ValueError(f"--model {model} is a loupe training run (model.json); it brings "
                             "its own weights, so leave out --weights")
        from loupe.training import load_model

        network, spec = load_model(model)
        prep = spec.get("preprocessing", {})
        loaded = LoadedClassifier(
            model=network.eval(),
            mean=_triple(mean or prep.get("mean", (0.485, 0.456, 0.406))),
            std=_triple(std or prep.get("std", (0.229, 0.224, 0.225))),
            num_outputs=int(spec["model"]["num_classes"]),
            description={"model": os.fspath(model), "kind": "loupe training run",
                         "architecture": spec.get("model")},
            label_offset=int(spec.get("label_offset", 0)),
            input_size=spec.get("input_size"),
        )
    else:
        if Path(model).exists():
            raise ValueError(f"--model {model}: a path but not a loupe training run (no "
                             "model.json beside it); give a torchvision name and --weights FILE")
        if weights is None:
            raise ValueError(f"--model {model} needs --weights (an enum name such as "
                             "IMAGENET1K_V1, a state-dict file, or 'random')")
        enum = None if Path(weights).is_file() else weights_enum(model, weights)
        if enum is not None and mean is None and std is None and scale is None:
            prep = preprocessing_from_weights(enum)
        else:
            prep = preprocessing_from_options(
                mean=tuple(mean) if mean else None, std=tuple(std) if std else None, scale=scale
            )
        classifier = load_classifier(model, weights, num_classes=num_classes,
                                     preprocessing=prep, seed=seed)
        network = classifier.model
        loaded = LoadedClassifier(
            model=network.eval(), mean=_triple(prep.mean), std=_triple(prep.std),
            num_outputs=_num_outputs(network),
            description={"model": model, "weights": weights, "source": classifier.source},
        )
    if patch:
        patched = apply_patch(loaded.model, patch).eval()
        loaded = LoadedClassifier(patched, loaded.mean, loaded.std, loaded.num_outputs,
                                  {**loaded.description, "patch": patch}, loaded.label_offset,
                                  loaded.input_size)
    return loaded


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"--mean/--std need 1 or 3 values, got {len(values)}")
    return values[0], values[1], values[2]


def _num_outputs(model: nn.Module) -> int:
    weights = [v for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() >= 2]
    if not weights:
        raise ValueError(f"cannot tell how many outputs {type(model).__name__} has")
    return int(weights[-1].shape[0])


def has_background(class_names: Sequence[str]) -> bool:
    """True when class 0 of a data set is its background (segmentation sets)."""
    return bool(class_names) and class_names[0].strip().lower() in BACKGROUND_NAMES


def offset_mapping(num_dataset_classes: int, num_outputs: int, offset: int) -> ClassMapping:
    """Data-set class ``c`` <-> classifier output ``c - offset`` where that output exists."""
    return tuple(
        (c - offset,) if 0 <= c - offset < num_outputs else () for c in range(num_dataset_classes)
    )


def class_correspondence(
    class_names: Sequence[str],
    classifier: LoadedClassifier,
    *,
    class_map: str | None = None,
    label_offset: int | None = None,
) -> tuple[ClassMapping, dict[str, Any]]:
    """The mapping from data-set classes to classifier outputs and how it was chosen.

    ``class_map``: ``"coco_to_imagenet"`` (the shipped table) or a JSON file
    ``{data-set class name: [classifier indices]}``."""
    outputs = classifier.num_outputs
    if class_map is not None and label_offset is not None:
        raise ValueError("give --class-map or --label-offset, not both")
    if class_map is not None:
        mapping = load_class_map(class_map, class_names, outputs)
        if not any(mapping):
            raise ValueError(f"--class-map {class_map}: no data-set class has a counterpart")
        return mapping, {"class_map": class_map}
    if label_offset is None:
        label_offset = classifier.label_offset
    if label_offset is None:
        n = len(class_names)
        if has_background(class_names) and outputs == n - 1:
            label_offset = 1
        elif outputs == n:
            label_offset = 0
        else:
            raise ValueError(
                f"the model has {outputs} outputs and the data set {n} classes "
                f"({'with' if has_background(class_names) else 'without'} background); say "
                "how they correspond with --class-map (e.g. coco_to_imagenet) or --label-offset"
            )
    if label_offset < 0:
        raise ValueError(f"--label-offset must be >= 0, got {label_offset}")
    mapping = offset_mapping(len(class_names), outputs, label_offset)
    if not any(mapping):
        raise ValueError(f"--label-offset {label_offset} leaves no data-set class a classifier "
                         f"output ({outputs} outputs, {len(class_names)} classes)")
    return mapping, {"label_offset": label_offset}

