"""What ``loupe compare`` compares (:class:`CompareConfig`), its rows (:class:`Row`: a map
method, a baseline, or a map method refined by the dense CRF), its folder layout, and the
settings a comparison folder is bound to (``compare.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe.evaluation import ResultOptions
from loupe.io import to_jsonable
from loupe.mapsets.files import check_same_run
from loupe.mapsets.generate import MEMORY_OPTIONS, MapsConfig
from loupe.method_specs import format_method_spec, method_slug, parse_method_spec
from loupe.metrics import default_thresholds

RUN_FILE = "compare.json"
#: The model-free baselines every comparison includes.
BASELINES = ("baseline-background", "baseline-gaussian")
CRF_SUFFIX = "+crf"
FORMAT = ("loupe compare 1: maps/<slug>/ (loupe maps), crf/<slug>/t<threshold>/ (loupe masks "
          "--crf at every swept threshold), results.json, per_image.json, compare.md, "
          "compare.html, miou_vs_threshold.png, overlays.png")


@dataclass(frozen=True)
class Row:
    """One row of the comparison.

    name: the canonical method spec (:func:`~loupe.method_specs.format_method_spec`), with
        ``+crf`` for a CRF-refined row. method, options: the map method and its options (of
        the refined maps for a CRF row). slug: the folder of its maps (``maps/<slug>``) and,
        for a CRF row, of its masks (``crf/<slug>``). crf: pseudo-masks refined by the CRF.
    """

    name: str
    method: str
    options: dict[str, object]
    slug: str
    crf: bool = False

    @property
    def baseline(self) -> bool:
        return self.method.startswith("baseline-")


@dataclass(frozen=True)
class CompareConfig:
    """Everything ``loupe compare`` does (see its ``--help``).

    maps: the data set (with its ``split_by_id`` half), the model and the map options of every
        method; its ``method``, ``options`` and ``out`` are set per method.
    methods: method specs (``name:key=value,...``); the :data:`BASELINES` are added.
    reference: the row every other is compared with (a spec, or ``spec+crf``); default: the
        first of ``methods``. crf: specs among ``methods`` whose pseudo-masks are also refined
        by the dense CRF at every threshold (rows ``spec+crf``).
    results: fixed thresholds, spread range, bootstrap (``boxes`` and ``iou`` are unused).
    ignore_classes: data-set classes left out of the scores (with ``maps.class_map``: also
        every class without a counterpart, as ``loupe evaluate --class-map``).
    common_threshold: the fixed threshold of the second difference to the reference.
    overlays: images in ``overlays.png`` (those where the methods disagree most).
    """

    maps: MapsConfig
    methods: tuple[str, ...]
    out: Path
    reference: str | None = None
    crf: tuple[str, ...] = ()
    results: ResultOptions = field(default_factory=ResultOptions)
    ignore_classes: tuple[str, ...] = ()
    common_threshold: float = 0.15
    overlays: int = 6
    progress: bool = True

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The swept background thresholds 0.00, 0.05, ..., 0.95."""
        return tuple(round(float(t), 6) for t in default_thresholds().tolist())

    def check(self) -> None:
        """A ValueError naming the first option out of range."""
        self.maps.check()
        if not self.methods:
            raise ValueError("--methods: give at least one method")
        for name, value in [("--common-threshold", self.common_threshold),
                            *(("--fixed", f) for f in self.results.fixed)]:
            if not any(abs(value - t) < 1e-6 for t in self.thresholds):
                raise ValueError(f"{name} {value:g} is not one of the swept thresholds 0.00, "
                                 "0.05, ..., 0.95")
        if self.results.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0, got {self.results.bootstrap}")
        if not 0 < self.results.level < 1:
            raise ValueError(f"--level must lie in (0, 1), got {self.results.level}")
        if self.overlays < 0:
            raise ValueError(f"--overlays must be >= 0, got {self.overlays}")

    def maps_folder(self, row: Row) -> Path:
        return Path(self.out) / "maps" / row.slug

    def crf_folder(self, row: Row, threshold: float) -> Path:
        return Path(self.out) / "crf" / row.slug / f"t{threshold:.2f}"


def _maps_row(spec: str) -> Row:
    name, options = parse_method_spec(spec)
    kept = {k: v for k, v in options.items() if k not in MEMORY_OPTIONS}
    return Row(format_method_spec(name, options), name, options, method_slug(name, kept))


def comparison_rows(methods: Sequence[str], crf: Sequence[str] = (),
                    reference: str | None = None) -> tuple[list[Row], str]:
    """The rows of a comparison, in order (``methods``, the baselines not among them, the CRF
    rows) and the name of the reference row. Errors name the argument: a method given twice
    (two specs with the same maps), a ``--crf`` spec not among ``methods``, an unknown
    ``--reference``."""
    rows: list[Row] = []
    for spec in methods:
        row = _maps_row(spec)
        twin = next((r for r in rows if r.slug == row.slug), None)
        if twin is not None:
            raise ValueError(f"--methods gives {twin.name!r} and {spec!r}, the same maps "
                             f"(maps/{row.slug}); give each method once")
        rows.append(row)
    given = len(rows)
    rows += [_maps_row(b) for b in BASELINES if all(r.slug != b for r in rows)]
    for spec in crf:
        row = _maps_row(spec)
        base = next((r for r in rows[:given] if r.slug == row.slug), None)
        if base is None:
            raise ValueError(f"--crf {spec!r} is not among --methods; the CRF refines the maps "
                             "of a compared method")
        refined = Row(base.name + CRF_SUFFIX, base.method, base.options, base.slug, crf=True)
        if refined in rows:
            raise ValueError(f"--crf gives {spec!r} twice")
        rows.append(refined)
    return rows, _reference_name(rows, reference if reference is not None else methods[0])


def _reference_name(rows: Sequence[Row], reference: str) -> str:
    refined = reference.endswith(CRF_SUFFIX)
    spec = reference[: -len(CRF_SUFFIX)] if refined else reference
    try:
        wanted = _maps_row(spec)
    except ValueError as error:
        raise ValueError(f"--reference {reference!r}: {error}") from None
    for row in rows:
        if row.slug == wanted.slug and row.crf == refined:
            return row.name
    raise ValueError(f"--reference {reference!r} is not one of the compared rows: "
                     f"{', '.join(r.name for r in rows)}")


def describe_settings(config: CompareConfig, ids: Sequence[str]) -> dict[str, Any]:
    """What a comparison folder is bound to (``compare.json``): the data set and its images,
    the model and the map options; the maps and CRF masks under the folder depend on these
    alone. Methods, references and evaluation options are not among them (``results.json``
    records those of the last run)."""
    maps = config.maps
    return to_jsonable({
        "format": FORMAT,
        "dataset": maps.dataset.describe(),
        "images": {"split_by_id": maps.dataset.split_by_id, "count": len(ids),
                   "first": ids[0] if ids else None, "last": ids[-1] if ids else None},
        "model": {"model": maps.model, "weights": maps.weights, "num_classes": maps.num_classes,
                  "seed": maps.seed, "mean": maps.mean, "std": maps.std, "scale": maps.scale,
                  "patch": maps.patch},
        "maps": {"target_layer": maps.target_layer, "scales": list(maps.scales),
                 "flip": maps.flip, "class_map": maps.class_map,
                 "label_offset": maps.label_offset, "size": maps.size, "amp": maps.amp},
    })  # type: ignore[return-value]


def check_settings(path: Path, settings: dict[str, Any]) -> None:
    """A ValueError when ``path`` (an earlier ``compare.json``) holds other settings: its maps
    and masks were made with them. Methods, references and evaluation options may change."""
    try:
        check_same_run(path, settings, "comparison settings (compare.json)")
    except ValueError as error:
        raise ValueError(f"{error} (the methods, --crf, --reference and the evaluation options "
                         "may change between runs; the data set, model and map options may "
                         "not)") from None
