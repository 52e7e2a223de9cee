"""What ``loupe faithfulness`` measures (:class:`FaithfulnessConfig`), its rows (one per method
spec, :class:`MethodRow`), the metric options it accepts, and the settings a faithfulness
folder is bound to (``faithfulness.json``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe.data.spec import DatasetSpec
from loupe.io import to_jsonable
from loupe.mapsets.files import check_same_run
from loupe.mapsets.generate import MEMORY_OPTIONS, MapsConfig
from loupe.method_specs import format_method_spec, method_slug, parse_method_spec
from loupe.metrics.faithfulness import (
    GROUPS,
    METRICS,
    cascading_randomization,
    confidence_change,
    deletion_curves,
    energy_pointing_game,
    insertion_curves,
    pointing_game,
    road,
)

RUN_FILE = "faithfulness.json"
RESULTS_FILE = "results.json"
TABLE_FILE = "faithfulness.md"
METHODS_FOLDER = "methods"
FORMAT = ("loupe faithfulness 1: faithfulness.json (the settings), methods/<slug>.json (one "
          "method's per-image values), results.json (table, intervals, per-image values), "
          "faithfulness.md")
#: Where the pointing games' regions come from: ``auto`` = masks when the data set has them,
#: else boxes, else none.
REGION_SOURCES = ("auto", "masks", "boxes", "none")
SCORES = ("probability", "logit")
#: The row every other is compared with when ``--reference`` is not given and it is a row:
#: the centre-bias baseline, the model-free map a method must beat to show anything.
DEFAULT_REFERENCE = "baseline-gaussian"

#: The function behind each metric group, whose keyword options ``metric_options`` may set.
GROUP_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "deletion": deletion_curves,
    "insertion": insertion_curves,
    "road": road,
    "confidence": confidence_change,
    "pointing_game": pointing_game,
    "energy_pointing_game": energy_pointing_game,
    "randomization": cascading_randomization,
}
#: Arguments that :func:`~loupe.metrics.faithfulness.faithfulness_table` sets itself.
_RESERVED = {"model", "images", "maps", "regions", "targets", "scorer", "score", "chunk_size",
             "method", "target_layer", "method_options", "every_stage", "reference_maps"}


@dataclass(frozen=True)
class MethodRow:
    """One row of the table: ``name`` the canonical spec; ``method``, ``options`` what
    :func:`loupe.explain` gets; ``slug`` the name of its file under ``methods/``."""

    name: str
    method: str
    options: dict[str, object]
    slug: str


def method_rows(specs: Sequence[str]) -> list[MethodRow]:
    """The rows of ``--methods`` specs, in order; a ValueError for an unknown method or option
    and for two specs with the same maps."""
    if isinstance(specs, str) or not specs:
        raise ValueError("--methods: give at least one method spec")
    rows: list[MethodRow] = []
    for spec in specs:
        try:
            name, options = parse_method_spec(spec)
        except ValueError as error:
            raise ValueError(f"--methods: {error}") from None
        kept = {k: v for k, v in options.items() if k not in MEMORY_OPTIONS}
        row = MethodRow(format_method_spec(name, options), name, options, method_slug(name, kept))
        twin = next((r for r in rows if r.slug == row.slug), None)
        if twin is not None:
            raise ValueError(f"--methods gives {twin.name!r} and {spec!r}, the same maps; give "
                             "each method once")
        rows.append(row)
    return rows


def reference_row(rows: Sequence[MethodRow], reference: str | None) -> MethodRow | None:
    """The row named by ``reference`` (a method spec, compared in canonical form), or without
    one the :data:`DEFAULT_REFERENCE` row when there is one (else None: no differences); a
    ValueError naming ``--reference`` when it is not one of the rows."""
    if reference is None:
        return next((row for row in rows if row.name == DEFAULT_REFERENCE), None)
    try:
        name = format_method_spec(*parse_method_spec(reference))
    except ValueError as error:
        raise ValueError(f"--reference: {error}") from None
    found = next((row for row in rows if row.name == name), None)
    if found is None:
        raise ValueError(f"--reference {reference!r} is not one of --methods "
                         f"({', '.join(row.name for row in rows)}); give one of them")
    return found


def check_metric_options(options: Mapping[str, Mapping[str, object]]) -> None:
    """A ValueError naming the first group or option that the metric functions do not take
    (``--metric-option GROUP.KEY=VALUE``)."""
    for group, values in options.items():
        if group not in GROUP_FUNCTIONS:
            raise ValueError(f"--metric-option: no metric group {group!r}; groups: "
                             f"{', '.join(GROUPS)}")
        parameters = inspect.signature(GROUP_FUNCTIONS[group]).parameters
        known = sorted(p for p, v in parameters.items()
                       if v.kind is v.KEYWORD_ONLY and p not in _RESERVED)
        for key in values:
            if key not in known:
                raise ValueError(f"--metric-option {group}.{key}: {group} has no option "
                                 f"{key!r}; its options are: {', '.join(known) or 'none'}")


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Everything ``loupe faithfulness`` does (see its ``--help``).

    dataset / images: the images: a data set (its image-level labels are the targets, its
        masks or boxes the regions) or image files (top-``topk`` targets, no regions); one.
    model ... patch: the classifier (:func:`loupe.models.load_classifier`); class_map,
        label_offset: data-set classes -> classifier outputs (as ``loupe maps``).
    methods: method specs; metrics: names (None: all, less the pointing games without
        regions); metric_options: ``group -> {option: value}`` for the metric functions.
    topk: targets = the K best classes (data sets: with a counterpart) instead of the labels.
    size: images are resized to ``size x size`` (None: the classifier's input size).
    regions: one of :data:`REGION_SOURCES`. score: ``probability`` or ``logit``.
    chunk_size: perturbed images per forward (memory only; None: from the image size, see
        :class:`loupe.metrics._scoring.Scorer`). bootstrap, bootstrap_seed,
        level: the intervals over images (bootstrap 0: means only).
    reference: the row every other is compared with, image by image (paired bootstrap
        intervals of the differences); None: :data:`DEFAULT_REFERENCE` when it is a row.
    """

    out: Path
    model: str
    methods: tuple[str, ...]
    dataset: DatasetSpec | None = None
    images: tuple[Path, ...] = ()
    weights: str | None = None
    num_classes: int | None = None
    seed: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: str | None = None
    patch: str | None = None
    class_map: str | None = None
    label_offset: int | None = None
    metrics: tuple[str, ...] | None = None
    metric_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    topk: int | None = None
    target_layer: str | None = None
    size: int | None = None
    regions: str = "auto"
    score: str = "probability"
    batch_size: int = 8
    chunk_size: int | None = None
    workers: int = 0
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    level: float = 0.95
    reference: str | None = None
    progress: bool = True

    def check(self) -> None:
        """A ValueError naming the first option out of range (before any work)."""
        if (self.dataset is None) == (not self.images):
            raise ValueError("give a data set (--dataset and its options) or image files "
                             "(--images), not both and not neither")
        reference_row(method_rows(self.methods), self.reference)
        if self.metrics is not None:
            unknown = [m for m in self.metrics if m not in METRICS]
            if not self.metrics or unknown:
                raise ValueError(f"--metrics: unknown metric {unknown[0] if unknown else ''!r}; "
                                 f"choose from: {', '.join(METRICS)}")
        check_metric_options(self.metric_options)
        for name, value, low in (("--batch-size", self.batch_size, 1),
                                 ("--chunk-size", self.chunk_size, 1),
                                 ("--workers", self.workers, 0),
                                 ("--bootstrap", self.bootstrap, 0)):
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"--topk must be at least 1, got {self.topk}")
        if self.size is not None and self.size < 8:
            raise ValueError(f"--size must be at least 8 pixels, got {self.size}")
        if self.regions not in REGION_SOURCES:
            raise ValueError(f"--regions must be one of {', '.join(REGION_SOURCES)}, got "
                             f"{self.regions!r}")
        if self.score not in SCORES:
            raise ValueError(f"--score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if not 0 < self.level < 1:
            raise ValueError(f"--level must lie in (0, 1), got {self.level}")
        if self.images and (self.class_map or self.label_offset is not None):
            raise ValueError("--class-map and --label-offset map data-set classes; image "
                             "files have none (their targets are the top --topk classes)")


def describe_settings(config: FaithfulnessConfig, *, size: int, regions: str,
                      metrics: Sequence[str], image_ids: Sequence[str]) -> dict[str, Any]:
    """What a faithfulness folder is bound to (``faithfulness.json``): the images, the model,
    the targets and regions, the metrics and their options. Methods, the bootstrap and
    memory options (batch and chunk sizes) are not among them: each method's values are kept
    in its own file, and no value depends on the batches."""
    images: dict[str, Any]
    if config.dataset is not None:
        images = {"dataset": config.dataset.describe()}
    else:
        images = {"files": [str(p) for p in config.images]}
    images.update(count=len(image_ids), first=image_ids[0] if image_ids else None,
                  last=image_ids[-1] if image_ids else None)
    return to_jsonable({
        "format": FORMAT,
        "images": images,
        "model": {"model": config.model, "weights": config.weights,
                  "num_classes": config.num_classes, "seed": config.seed, "mean": config.mean,
                  "std": config.std, "scale": config.scale, "patch": config.patch},
        "targets": {"rule": f"top-{config.topk}" if config.topk else
                    ("image-level labels" if config.dataset is not None else "top-1"),
                    "class_map": config.class_map, "label_offset": config.label_offset},
        "size": size,
        "regions": regions,
        "target_layer": config.target_layer,
        "score": config.score,
        "metrics": list(metrics),
        "metric_options": {g: dict(sorted(o.items()))
                           for g, o in sorted(config.metric_options.items())},
    })  # type: ignore[return-value]


def check_settings(path: Path, settings: Mapping[str, Any]) -> None:
    """A ValueError when ``path`` (an earlier ``faithfulness.json``) holds other settings:
    the method files in the folder were computed with them."""
    try:
        check_same_run(path, settings, "faithfulness settings (faithfulness.json)")
    except ValueError as error:
        raise ValueError(f"{error} (methods, the bootstrap and batch or chunk sizes may change "
                         "between runs; the images, model, targets and metrics may not)"
                         ) from None


def config_of_maps(maps: MapsConfig, methods: Sequence[str], out: Path, *, bootstrap: int = 1000,
                   bootstrap_seed: int = 0, level: float = 0.95) -> FaithfulnessConfig:
    """The faithfulness run of ``loupe compare --faithfulness``: the data set, model, class
    correspondence, target layer, input size and batch size of its maps (``maps``), every
    metric with its defaults. The maps are made at one scale without flips, at the model's
    input size when ``maps.size`` is None."""
    return FaithfulnessConfig(
        out=out, model=maps.model, methods=tuple(methods), dataset=maps.dataset,
        weights=maps.weights, num_classes=maps.num_classes, seed=maps.seed, mean=maps.mean,
        std=maps.std, scale=maps.scale, patch=maps.patch, class_map=maps.class_map,
        label_offset=maps.label_offset, target_layer=maps.target_layer, size=maps.size,
        batch_size=maps.batch_size, workers=maps.workers, bootstrap=bootstrap,
        bootstrap_seed=bootstrap_seed, level=level, progress=maps.progress,
    )
