"""From a :class:`~loupe.pipeline.evaluate.Tally` to results: sweep summaries, per-class
figures, bootstrap intervals, and the files of a run folder (``results.json``, ``report.md``,
``miou_vs_threshold.png``, ``overlays.png``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from loupe.io import atomic_path
from loupe.masks import masks_from_maps
from loupe.masks.palette import load_mask_png
from loupe.metrics import (
    bootstrap_miou_ci,
    bootstrap_miou_difference,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
    sweep_summary,
)
from loupe.metrics.wsol import default_cam_thresholds
from loupe.pipeline.evaluate import Source, Tally, per_image_confusions
from loupe.pipeline.files import load_map_file, output_path
from loupe.pipeline.localization import pxap_from_counts, summarize_localization
from loupe.reports import markdown_table, plot_miou_vs_threshold, plot_overlay_grid
from loupe.reports.markdown import write_results_json

logger = logging.getLogger(__name__)


def _nan_to_none(values: torch.Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def _per_class(tally: Tally, values: torch.Tensor) -> dict[str, float | None]:
    """Class name -> value (None for NaN), the ignored classes left out."""
    return {name: value for c, (name, value) in
            enumerate(zip(tally.class_names, _nan_to_none(values), strict=True))
            if c not in tally.ignored}


def method_results(
    tally: Tally, sources: Sequence[Source], thresholds: Sequence[float], *,
    fixed: Sequence[float], spread_range: tuple[float, float], bootstrap: int, seed: int,
    level: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per method: the sweep summary (maps), figures at its best threshold (or of its masks),
    a bootstrap interval of its mIoU; and the paired bootstrap comparisons (each method
    against the best one, and against every baseline)."""
    methods: dict[str, Any] = {}
    chosen: dict[str, torch.Tensor] = {}  # per-image matrices at the chosen threshold
    for k, source in enumerate(sources):
        total = tally.confusions[k]
        entry: dict[str, Any] = {"folder": str(source.folder), "kind": source.kind,
                                 "method": source.method}
        if source.kind == "maps":
            summary = sweep_summary(total, thresholds, fixed, spread_range)
            entry["sweep"] = summary.as_dict()
            at = summary.thresholds.index(summary.best_threshold)
            entry["threshold"] = summary.best_threshold
        else:
            at = 0
            entry["threshold"] = None
        conf = total[at]
        entry.update(
            miou=float(mean_iou(conf)),
            pixel_accuracy=float(pixel_accuracy(conf)),
            iou=_per_class(tally, iou_per_class(conf)),
            precision=_per_class(tally, precision_per_class(conf)),
            recall=_per_class(tally, recall_per_class(conf)),
            confusion=conf.tolist(),
        )
        chosen[source.name] = per_image_confusions(tally, k, at)
        if bootstrap:
            entry["miou_interval"] = asdict(bootstrap_miou_ci(chosen[source.name], bootstrap,
                                                              seed, level))
        methods[source.name] = entry
    comparisons: list[dict[str, Any]] = []
    if bootstrap and len(sources) > 1:
        best = max(methods, key=lambda name: methods[name]["miou"])
        reasons: dict[tuple[str, str], list[str]] = {}
        for s in sources:
            if s.name != best:
                reasons.setdefault((s.name, best), []).append("best")
        for b in (s.name for s in sources if s.is_baseline):
            for s in sources:
                if s.name != b and not s.is_baseline:
                    reasons.setdefault((s.name, b), []).append("baseline")
        for (name, against), why in reasons.items():
            reason = " and ".join(why)
            interval = bootstrap_miou_difference(chosen[name], chosen[against], bootstrap,
                                                 seed, level)
            comparisons.append({"method": name, "against": against, "reason": reason,
                                **asdict(interval)})
    return methods, comparisons


def localization_results(tally: Tally, sources: Sequence[Source], iou: float) -> dict[str, Any]:
    """WSOL figures per maps source (top-1 loc, GT-known loc, MaxBoxAccV2, PxAP)."""
    results: dict[str, Any] = {}
    cam_thresholds = default_cam_thresholds()
    for k, source in enumerate(sources):
        if source.kind != "maps":
            continue
        records = [r for index in sorted(tally.pairs[k]) for r in tally.pairs[k][index]]
        entry = summarize_localization(records, cam_thresholds, iou=iou)
        counts = tally.pxap[k] if tally.pxap else None
        entry["pxap"] = pxap_from_counts(counts) if counts is not None else None
        results[source.name] = entry
    return results


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def report_markdown(results: dict[str, Any]) -> str:
    """The Markdown of ``report.md`` from the results dict."""
    methods = results["methods"]
    data = results["dataset"]
    lines = [f"# Evaluation: {data['kind']} {data.get('split') or ''} "
             f"({results['images']} images)", ""]
    if results.get("ignored_classes"):
        via = f" (with --class-map {results['class_map']})" if results.get("class_map") else ""
        lines += [f"Ignored classes{via}, not counted and left out of the mean and the "
                  f"per-class table: {', '.join(results['ignored_classes'])}.", ""]
    swept = {n: m["sweep"] for n, m in methods.items() if m["kind"] == "maps" and "sweep" in m}
    if swept:
        lines += ["## Pseudo-mask mIoU against the background threshold", "",
                  markdown_table(swept)]
    masks = {n: m for n, m in methods.items() if m["kind"] == "masks"}
    if masks:
        lines += ["## Masks (already thresholded)", "",
                  "| method | mIoU (%) | pixel accuracy (%) |", "|---|---|---|"]
        lines += [f"| {n} | {_pct(m['miou'])} | {_pct(m['pixel_accuracy'])} |"
                  for n, m in masks.items()]
        lines.append("")
    if methods and all("miou_interval" in m for m in methods.values()):
        level = next(iter(methods.values()))["miou_interval"]["level"]
        lines += [f"## mIoU with {100 * level:g}% bootstrap intervals (images resampled)", "",
                  "| method | threshold | mIoU (%) | interval (%) | mean precision (%) | "
                  "mean recall (%) |", "|---|---|---|---|---|---|"]
        for name, m in methods.items():
            ci = m["miou_interval"]
            threshold = "-" if m["threshold"] is None else f"{m['threshold']:.2f}"
            precision = _mean(m["precision"].values())
            recall = _mean(m["recall"].values())
            lines.append(f"| {name} | {threshold} | {_pct(m['miou'])} | {_pct(ci['low'])} - "
                         f"{_pct(ci['high'])} | {_pct(precision)} | {_pct(recall)} |")
        lines.append("")
    if results.get("comparisons"):
        lines += ["## Paired bootstrap of mIoU differences", "",
                  "| method | against | why | difference (points) | interval (points) |",
                  "|---|---|---|---|---|"]
        for c in results["comparisons"]:
            lines.append(f"| {c['method']} | {c['against']} | {c['reason']} | "
                         f"{_pct(c['observed'])} | {_pct(c['low'])} to {_pct(c['high'])} |")
        lines.append("")
    if methods and results.get("has_masks", True):
        names = list(methods)
        lines += ["## IoU per class (%) at each method's threshold", "",
                  "| class | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for cls in next(iter(methods.values()))["iou"]:
            lines.append(f"| {cls} | " + " | ".join(_pct(methods[n]["iou"][cls]) for n in names)
                         + " |")
        lines.append("")
    if results.get("localization"):
        lines += ["## Localization", "",
                  "| method | pairs | top-1 loc (%) | GT-known loc (%) | MaxBoxAccV2 (%) | "
                  "PxAP (%) |", "|---|---|---|---|---|---|"]
        for name, m in results["localization"].items():
            lines.append(f"| {name} | {m['pairs']} | {_pct(m['top1_loc'])} | "
                         f"{_pct(m['gt_known_loc'])} | {_pct(m['max_box_acc_v2'])} | "
                         f"{_pct(m['pxap'])} |")
        lines.append("")
    lines += [
        "Each method's threshold is its best on these same images (optimistic; the spread "
        "shows how much it matters). Bootstrap: "
        f"{results['bootstrap']['n']} resamples of the images, seed "
        f"{results['bootstrap']['seed']}; a difference interval that excludes 0 separates "
        "two methods beyond resampling noise.",
    ]
    return "\n".join(lines) + "\n"


def _mean(values: Any) -> float:
    real = [v for v in values if v is not None]
    return sum(real) / len(real) if real else float("nan")


def write_run(out: Path, results: dict[str, Any]) -> None:
    """``results.json``, ``report.md`` and the mIoU-threshold plot (maps methods) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_results_json(out / "results.json", results)
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text(report_markdown(results), encoding="utf-8")
    curves = {name: (m["sweep"]["thresholds"], m["sweep"]["miou"])
              for name, m in results["methods"].items() if "sweep" in m}
    if curves:
        plot_miou_vs_threshold(out / "miou_vs_threshold.png", curves)


def write_overlays(
    out: Path, dataset: Any, ids: Sequence[str], sources: Sequence[Source],
    thresholds: dict[str, float | None], count: int, side: int = 128,
) -> bool:
    """``overlays.png``: ``count`` images spread over the data set with their ground truth
    and each method's mask (maps at the method's threshold), all shown at ``side x side``.
    Returns False (nothing written) when the data set has no readable images."""
    if count <= 0 or not ids:
        return False
    picks = sorted(set(torch.linspace(0, len(ids) - 1, min(count, len(ids))).round()
                       .long().tolist()))
    images, columns = [], {"ground truth": []}
    columns.update({s.name: [] for s in sources})
    for index in picks:
        sample = dataset[index]
        if sample.image is None or sample.mask is None:
            return False
        pixels = torch.as_tensor(_rgb(sample.image)).float()[None]
        images.append(F.interpolate(pixels, size=(side, side), mode="bilinear",
                                    align_corners=False, antialias=True)[0])
        columns["ground truth"].append(_nearest(sample.mask, side))
        for source in sources:
            path = output_path(source.folder, sample.id, source.suffix)
            if source.kind == "maps":
                maps, classes = load_map_file(path)
                mask = masks_from_maps(torch.from_numpy(maps), torch.from_numpy(classes),
                                       thresholds[source.name] or 0.0)
            else:
                mask = load_mask_png(path)
            columns[source.name].append(_nearest(mask, side))
    plot_overlay_grid(out / "overlays.png", torch.stack(images).round().clamp(0, 255)
                      .to(torch.uint8), {k: torch.stack(v) for k, v in columns.items()})
    return True


def _rgb(image: Any) -> torch.Tensor:
    from torchvision.transforms.functional import pil_to_tensor

    return image if isinstance(image, torch.Tensor) else pil_to_tensor(image.convert("RGB"))


def _nearest(mask: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(mask[None, None].float(), size=(side, side), mode="nearest")[0, 0].long()
