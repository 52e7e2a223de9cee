"""``loupe faithfulness`` end to end: load the classifier and the images, score every method with
:func:`~loupe.metrics.faithfulness.faithfulness_table` (one method at a time, its per-image
values kept in ``methods/<slug>.json``), then the table with bootstrap intervals over images
(``results.json``, ``faithfulness.md``).

A run started again into the same folder reuses every method file (a killed run loses at most
the method it was scoring); methods may be added and the bootstrap may change, but other
images, model, targets or metrics are refused (``faithfulness.json``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loupe.faithfulness.batches import ImageSource, image_batches, open_source
from loupe.faithfulness.config import (
    METHODS_FOLDER,
    RESULTS_FILE,
    RUN_FILE,
    TABLE_FILE,
    FaithfulnessConfig,
    MethodRow,
    check_settings,
    describe_settings,
    method_rows,
)
from loupe.faithfulness.results import faithfulness_markdown, faithfulness_results
from loupe.io import atomic_path, read_json, write_json
from loupe.mapsets.files import remove_stale_temp_files
from loupe.metrics.faithfulness import METRICS, faithfulness_table
from loupe.models import Classifier, PreprocessingOptions, load_classifier
from loupe.registry import get_method

logger = logging.getLogger(__name__)


def run_faithfulness(config: FaithfulnessConfig, device: torch.device) -> dict[str, Any]:
    """Score every method of ``config`` (see the module docstring); returns the content of
    ``results.json``."""
    config.check()
    rows = method_rows(config.methods)
    classifier = load_classifier(
        config.model, config.weights, num_classes=config.num_classes, seed=config.seed,
        options=PreprocessingOptions(mean=config.mean, std=config.std, scale=config.scale),
        patch=config.patch,
    )
    source = open_source(config, classifier)
    size = config.size or classifier.input_size or classifier.preprocessing.size
    metrics = chosen_metrics(config.metrics, source.regions)
    out = Path(config.out)
    settings = describe_settings(config, size=size, regions=source.regions, metrics=metrics,
                                 image_ids=source.ids)
    check_settings(out / RUN_FILE, settings)
    stale = remove_stale_temp_files(out)
    if stale:
        logger.info("removed %d temporary files left by an interrupted run", len(stale))
    write_json(out / RUN_FILE, settings)
    model = classifier.model.to(device)
    records = []
    for i, row in enumerate(rows, 1):
        logger.info("faithfulness: method %d/%d: %s", i, len(rows), row.name)
        records.append(method_record(config, row, classifier, model, source, size, metrics,
                                     device))
    results = faithfulness_results(config, rows, records, metrics, settings)
    write_json(out / RESULTS_FILE, results)
    with atomic_path(out / TABLE_FILE) as tmp:
        tmp.write_text(faithfulness_markdown(results), encoding="utf-8")
    return results


def chosen_metrics(metrics: Sequence[str] | None, regions: str) -> list[str]:
    """The metrics of a run: ``metrics``, or every metric (less the pointing games when there
    are no regions); a ValueError for a pointing game without regions."""
    if metrics is None:
        return [m for m, spec in METRICS.items() if regions != "none" or not spec.needs_regions]
    needing = [m for m in metrics if METRICS[m].needs_regions]
    if needing and regions == "none":
        raise ValueError(f"--metrics {needing[0]} needs object regions: give a data set with "
                         "masks or boxes (and not --regions none)")
    return list(dict.fromkeys(metrics))


def method_record(config: FaithfulnessConfig, row: MethodRow, classifier: Classifier,
                  model: nn.Module, source: ImageSource, size: int, metrics: list[str],
                  device: torch.device) -> dict[str, Any]:
    """The per-image values of one method: read from ``methods/<slug>.json`` when an earlier
    run wrote it, else computed and written there (atomically)."""
    path = Path(config.out) / METHODS_FOLDER / f"{row.slug}.json"
    if path.is_file():
        record = read_json(path, "method values")
        if not isinstance(record, dict) or record.get("method") != row.name or any(
                m not in record.get("values", {}) for m in metrics):
            raise ValueError(f"{path}: not the values of {row.name!r} for these metrics; "
                             "delete it to recompute")
        logger.info("faithfulness: %s: reusing %s", row.name, path)
        return record
    ids: list[str] = []
    names: list[tuple[str, ...]] = []

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        for batch in image_batches(source, classifier, model, size=size,
                                   batch_size=config.batch_size, topk=config.topk,
                                   workers=config.workers, device=device,
                                   progress=row.name if config.progress else None):
            ids.extend(batch.ids)
            names.extend(batch.names)
            yield batch.images, batch.targets, batch.regions
        if not ids:
            raise ValueError("no image has a target the classifier can score (check "
                             "--class-map or --label-offset)")

    uses_layer = get_method(row.method).uses_layer
    start = time.perf_counter()
    table = faithfulness_table(
        model, batches(), methods=[row.method], metrics=metrics,
        target_layer=config.target_layer if uses_layer else None,
        method_options={row.method: row.options}, metric_options=config.metric_options,
        score=config.score, chunk_size=config.chunk_size, n_boot=1,
    )
    record = {
        "method": row.name,
        "seconds": round(time.perf_counter() - start, 3),
        "ids": ids,
        "targets": [list(n) for n in names],
        "values": {m: table.per_image[row.method, m].tolist() for m in metrics},
    }
    write_json(path, record)
    return record

