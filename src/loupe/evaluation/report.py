"""The files of an evaluation run folder: ``results.json``, ``report.md`` (the tables of the
results), ``miou_vs_threshold.png`` and ``overlays.png``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from loupe.data.base import rgb_tensor
from loupe.data.spec import DatasetSpec, open_spec
from loupe.evaluation.sources import Source
from loupe.io import atomic_path, write_json
from loupe.mapsets.files import check_output_folder, load_map_file, output_path
from loupe.masks import load_mask_png, masks_from_maps
from loupe.reports import markdown_table, plot_miou_vs_threshold, plot_overlay_grid

logger = logging.getLogger(__name__)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def report_markdown(results: dict[str, Any]) -> str:
    """The Markdown of ``report.md`` from the results dict."""
    data = results["dataset"]
    lines = [f"# Evaluation: {data['kind']} {data.get('split') or ''} "
             f"({results['images']} images)", ""]
    if results.get("ignored_classes"):
        recorded = " as recorded in maps.json" if results.get("class_map_from") == "maps.json" \
            else ""
        via = (f" (with --class-map {results['class_map']}{recorded})"
               if results.get("class_map") else "")
        lines += [f"Ignored classes{via}, not counted and left out of the mean and the "
                  f"per-class table: {', '.join(results['ignored_classes'])}.", ""]
    for section in (_sweeps, _masks, _intervals, _comparisons, _per_class, _localization):
        lines += section(results)
    lines += [
        "Each method's threshold is its best on these same images (optimistic; the spread "
        "shows how much it matters). Bootstrap: "
        f"{results['bootstrap']['n']} resamples of the images, seed "
        f"{results['bootstrap']['seed']}; a difference interval that excludes 0 separates "
        "two methods beyond resampling noise.",
    ]
    return "\n".join(lines) + "\n"


def _sweeps(results: dict[str, Any]) -> list[str]:
    methods = results["methods"]
    swept = {n: m["sweep"] for n, m in methods.items() if m["kind"] == "maps" and "sweep" in m}
    if not swept:
        return []
    return ["## Pseudo-mask mIoU against the background threshold", "", markdown_table(swept)]


def _masks(results: dict[str, Any]) -> list[str]:
    masks = {n: m for n, m in results["methods"].items() if m["kind"] == "masks"}
    if not masks:
        return []
    return (["## Masks (already thresholded)", "",
             "| method | mIoU (%) | pixel accuracy (%) |", "|---|---|---|"]
            + [f"| {n} | {_pct(m['miou'])} | {_pct(m['pixel_accuracy'])} |"
               for n, m in masks.items()] + [""])


def _intervals(results: dict[str, Any]) -> list[str]:
    methods = results["methods"]
    if not methods or not all("miou_interval" in m for m in methods.values()):
        return []
    level = next(iter(methods.values()))["miou_interval"]["level"]
    lines = [f"## mIoU with {100 * level:g}% bootstrap intervals (images resampled)", "",
             "| method | threshold | mIoU (%) | interval (%) | mean precision (%) | "
             "mean recall (%) |", "|---|---|---|---|---|---|"]
    for name, m in methods.items():
        ci = m["miou_interval"]
        threshold = "-" if m["threshold"] is None else f"{m['threshold']:.2f}"
        precision = _mean(m["precision"].values())
        recall = _mean(m["recall"].values())
        lines.append(f"| {name} | {threshold} | {_pct(m['miou'])} | {_pct(ci['low'])} - "
                     f"{_pct(ci['high'])} | {_pct(precision)} | {_pct(recall)} |")
    return [*lines, ""]


def _comparisons(results: dict[str, Any]) -> list[str]:
    if not results.get("comparisons"):
        return []
    lines = ["## Paired bootstrap of mIoU differences", "",
             "| method | against | why | difference (points) | interval (points) |",
             "|---|---|---|---|---|"]
    for c in results["comparisons"]:
        lines.append(f"| {c['method']} | {c['against']} | {c['reason']} | "
                     f"{_pct(c['observed'])} | {_pct(c['low'])} to {_pct(c['high'])} |")
    return [*lines, ""]


def _per_class(results: dict[str, Any]) -> list[str]:
    methods = results["methods"]
    if not methods or not results.get("has_masks", True):
        return []
    names = list(methods)
    lines = ["## IoU per class (%) at each method's threshold", "",
             "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cls in next(iter(methods.values()))["iou"]:
        lines.append(f"| {cls} | " + " | ".join(_pct(methods[n]["iou"][cls]) for n in names)
                     + " |")
    return [*lines, ""]


def _localization(results: dict[str, Any]) -> list[str]:
    if not results.get("localization"):
        return []
    lines = ["## Localization", "",
             "| method | pairs | top-1 loc (%) | GT-known loc (%) | MaxBoxAccV2 (%) | "
             "PxAP (%) |", "|---|---|---|---|---|---|"]
    for name, m in results["localization"].items():
        lines.append(f"| {name} | {m['pairs']} | {_pct(m['top1_loc'])} | "
                     f"{_pct(m['gt_known_loc'])} | {_pct(m['max_box_acc_v2'])} | "
                     f"{_pct(m['pxap'])} |")
    return [*lines, "", *_ilsvrc(results)]


def _ilsvrc(results: dict[str, Any]) -> list[str]:
    rows = {n: m["ilsvrc"] for n, m in results["localization"].items() if m.get("ilsvrc")}
    if not rows:
        return []
    lines = ["### CAM's ILSVRC protocol (errors, lower is better)", "",
             "| method | guesses | images | top-1 loc err (%) | top-5 loc err (%) | "
             "top-5 loc err, heuristic (%) | top-1 cls err (%) | top-5 cls err (%) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['guesses']} | {m['images']} | "
                     f"{_pct(m['top1_loc_error'])} | {_pct(m['top5_loc_error'])} | "
                     f"{_pct(m['top5_loc_error_heuristic'])} | {_pct(m['top1_cls_error'])} | "
                     f"{_pct(m['top5_cls_error'])} |")
    return [*lines, "", "Boxes: the largest component above the box threshold times the map's "
            "maximum (CAM's rule); the heuristic's loose and tight boxes follow the authors' "
            "generator. Classes left out of the segmentation scores are left out here too.", ""]


def _mean(values: Any) -> float:
    real = [v for v in values if v is not None]
    return sum(real) / len(real) if real else float("nan")


#: Every file ``loupe evaluate`` writes into its run folder (``results.json`` marks one).
RUN_FILES = ("results.json", "report.md", "miou_vs_threshold.png", "overlays.png")


def check_evaluation_folder(out: Path) -> None:
    """A ValueError unless ``out`` can take an evaluation run: absent, empty, or an earlier
    evaluation run's folder (it has ``results.json``; its files are replaced, and those of
    :data:`RUN_FILES` that the new run does not write are removed, so that nothing stale,
    e.g. an old ``overlays.png``, stays beside the new results)."""
    check_output_folder(out, RUN_FILES[0], "an evaluation run")


def write_run(out: Path, results: dict[str, Any]) -> list[str]:
    """``results.json``, ``report.md`` and the mIoU-threshold plot (maps methods) in ``out``;
    returns the names written."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text(report_markdown(results), encoding="utf-8")
    curves = {name: (m["sweep"]["thresholds"], m["sweep"]["miou"])
              for name, m in results["methods"].items() if "sweep" in m}
    if not curves:
        return ["results.json", "report.md"]
    plot_miou_vs_threshold(out / "miou_vs_threshold.png", curves)
    return ["results.json", "report.md", "miou_vs_threshold.png"]


def write_overlays(
    out: Path, dataset: Any, ids: Sequence[str], sources: Sequence[Source],
    thresholds: dict[str, float | None], count: int, side: int = 160,
    picks: Sequence[int] | None = None,
) -> bool:
    """``overlays.png``: ``count`` images spread over the data set (or the data-set indices
    ``picks``, in that order) with their ground truth and each method's mask (maps at the
    method's threshold), each image scaled to a longer side of ``side`` pixels with its aspect
    ratio kept, and a legend of the class colours. Returns False (nothing written) when the
    data set has no readable images."""
    if count <= 0 or not ids:
        return False
    if picks is None:
        picks = sorted(set(torch.linspace(0, len(ids) - 1, min(count, len(ids))).round()
                           .long().tolist()))
    images, columns = [], {"ground truth": []}
    columns.update({s.name: [] for s in sources})
    for index in picks:
        sample = dataset[index]
        if sample.image is None or sample.mask is None:
            return False
        pixels = torch.as_tensor(rgb_tensor(sample.image)).float()[None]
        size = _kept_aspect(pixels.shape[-2:], side)
        images.append(F.interpolate(pixels, size=size, mode="bilinear", align_corners=False,
                                    antialias=True)[0].round().clamp(0, 255).to(torch.uint8))
        columns["ground truth"].append(_nearest(sample.mask, size))
        for source in sources:
            path = output_path(source.folder, sample.id, source.suffix)
            if source.kind == "maps":
                maps, classes = load_map_file(path)
                mask = masks_from_maps(torch.from_numpy(maps), torch.from_numpy(classes),
                                       thresholds[source.name] or 0.0)
            else:
                mask = load_mask_png(path)
            columns[source.name].append(_nearest(mask, size))
    plot_overlay_grid(out / "overlays.png", images, columns,
                      class_names=list(dataset.class_names))
    return True


def _kept_aspect(size: Sequence[int], side: int) -> tuple[int, int]:
    """``(h, w)`` with the longer side ``side`` and the aspect ratio of ``size``."""
    height, width = int(size[0]), int(size[1])
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()


def write_evaluation(out: Path, results: dict[str, Any], sources: Sequence[Source],
                     spec: DatasetSpec, overlays: int) -> None:
    """The whole run folder (rank 0): :func:`write_run`, and ``overlays.png`` of ``overlays``
    images when the data set has masks and readable images (a warning says why not); then
    the files of :data:`RUN_FILES` an earlier run left and this one did not write are
    removed (see :func:`check_evaluation_folder`)."""
    check_evaluation_folder(out)
    written = write_run(out, results)
    if overlays and results["has_masks"]:
        try:
            dataset = open_spec(spec, images=True)
            thresholds = {name: m["threshold"] for name, m in results["methods"].items()}
            ids = list(dataset.ids[: results["images"]])
            if write_overlays(out, dataset, ids, sources, thresholds, overlays):
                written.append("overlays.png")
        except (FileNotFoundError, ValueError) as error:
            logger.warning("no overlays.png: %s", error)
    for name in set(RUN_FILES) - set(written):
        (out / name).unlink(missing_ok=True)
