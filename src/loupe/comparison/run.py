"""``loupe compare`` end to end: the maps of every method (``loupe maps``' machinery, so
finished files are kept and a folder made with other settings is refused), the CRF references
at every threshold (``loupe masks --crf``' machinery, cached under ``crf/``), one evaluation
pass over all of them (``loupe evaluate``'s machinery), then the results and the files.

Every step is resumable: a run that is killed and started again recomputes nothing that was
written (files appear atomically), and a finished run started again only re-reads its files
and rewrites the same results."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from loupe import distributed
from loupe.comparison.config import (
    RUN_FILE,
    CompareConfig,
    Row,
    check_settings,
    comparison_rows,
    describe_settings,
)
from loupe.comparison.report import write_comparison
from loupe.comparison.results import comparison_results, row_tallies
from loupe.data.spec import open_spec, selected_count
from loupe.evaluation import EvaluationConfig, Source, evaluate_sources
from loupe.io import write_json
from loupe.mapsets import MasksConfig, generate_maps, write_pseudo_masks
from loupe.mapsets.pseudo_masks import dataset_images
from loupe.registry import get_method

logger = logging.getLogger(__name__)


def run_comparison(config: CompareConfig, device: torch.device) -> dict[str, Any] | None:
    """Compare the methods of ``config`` (see the module docstring); returns the content of
    ``results.json`` (None on the ranks other than 0 under ``torchrun``)."""
    config.check()
    rows, reference = comparison_rows(config.methods, config.crf, config.reference)
    spec = config.maps.dataset
    dataset = open_spec(spec, images=False)
    ids = list(dataset.ids[: selected_count(dataset, spec)])
    if not ids:
        raise ValueError(f"--dataset {spec.kind}: no images to compare")
    out = Path(config.out)
    settings = describe_settings(config, ids)
    check_settings(out / RUN_FILE, settings)
    distributed.barrier()
    if distributed.is_main():
        write_json(out / RUN_FILE, settings)
    maps_rows = [row for row in rows if not row.crf]
    for i, row in enumerate(maps_rows, 1):
        logger.info("compare: maps %d/%d: %s", i, len(maps_rows), row.name)
        generate_maps(_maps_config(config, row), device)
        distributed.barrier()
    crf_rows = [row for row in rows if row.crf]
    if crf_rows:
        images = dataset_images(open_spec(spec, images=True))
        for row in crf_rows:
            _crf_masks(config, row, images, f"dataset {spec.describe()}", device)
            distributed.barrier()
    sources, layout = _sources(config, rows)
    tally = evaluate_sources(EvaluationConfig(
        dataset=spec, sources=tuple(sources), thresholds=config.thresholds,
        workers=config.maps.workers, progress=config.progress,
        ignore_classes=config.ignore_classes, class_map=config.maps.class_map), device)
    if tally is None:
        return None
    tallies = row_tallies(tally, rows, layout, len(config.thresholds))
    results = comparison_results(tallies, tally, config, reference)
    write_comparison(out, results, tallies, config)
    return results


def _maps_config(config: CompareConfig, row: Row) -> Any:
    """The ``loupe maps`` run of one row: ``--target-layer`` only for layer methods."""
    uses_layer = get_method(row.method).uses_layer
    return replace(config.maps, method=row.method, options=dict(row.options),
                   out=config.maps_folder(row), progress=config.progress,
                   target_layer=config.maps.target_layer if uses_layer else None)


def _crf_masks(config: CompareConfig, row: Row, images: Any, description: str,
               device: torch.device) -> None:
    """The CRF-refined pseudo-masks of ``row``'s maps at every swept threshold, one ``loupe
    masks --crf`` folder per threshold (kept between runs)."""
    bar = tqdm(config.thresholds, unit="threshold", desc=f"crf {row.name}", dynamic_ncols=True,
               disable=not config.progress or not distributed.is_main())
    maps = config.maps_folder(row)
    for threshold in bar:
        masks = MasksConfig(maps, config.crf_folder(row, threshold), threshold, crf=True,
                            progress=False, maps_name=f"maps/{row.slug}")
        write_pseudo_masks(masks, device, images, description)


def _sources(config: CompareConfig, rows: list[Row]) -> tuple[list[Source], dict[str, list[int]]]:
    """What the evaluation pass reads: a maps folder per maps row, a masks folder per
    threshold per CRF row; and row name -> the indices of its sources."""
    sources: list[Source] = []
    layout: dict[str, list[int]] = {}
    for row in rows:
        if row.crf:
            folders = [(f"{row.name}@{t:.2f}", config.crf_folder(row, t), "masks")
                       for t in config.thresholds]
        else:
            folders = [(row.name, config.maps_folder(row), "maps")]
        layout[row.name] = list(range(len(sources), len(sources) + len(folders)))
        sources += [Source(name, folder, kind, row.method) for name, folder, kind in folders]
    return sources, layout
