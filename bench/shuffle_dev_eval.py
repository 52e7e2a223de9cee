"""Statistics of the dev screening: per-image threshold sweeps at every smoothing of the
protocol, CAM + dense CRF at every threshold, summaries and paired bootstraps.

Per image and threshold only TP, ground-truth and predicted counts per class matter
(``(I, T, 3, N)``, bench/study_eval.py), so a bootstrap with the threshold re-chosen in every
resample is one matrix product per method. Ground truth and map labels are relabelled as
``loupe evaluate --class-map`` does (classes without an ImageNet counterpart: ground truth
255, map labels -1), so the numbers are ``loupe evaluate``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from shuffle_dev_variants import REFERENCE, variants
from study_eval import (
    VariantStats,
    confusion_stats,
    interval_cell,
    load_stats,
    miou_from_stats,
    paired_differences,
    save_stats,
)

from loupe.data.base import rgb_tensor
from loupe.data.spec import DatasetSpec, open_spec
from loupe.evaluation.sources import ignored_class_indices, relabel
from loupe.io import atomic_path
from loupe.mapsets.files import load_map_file
from loupe.mapsets.pseudo_masks import pseudo_mask
from loupe.methods.shuffle import gaussian_blur
from loupe.metrics import confusion_matrix, default_thresholds, sweep_confusions

logger = logging.getLogger("shuffle_dev")
FRACTIONS = (0.0, 0.02, 0.04, 0.08)  # smoothing sigma / shorter side, offered to every method
FIXED = (0.1, 0.15, 0.2, 0.3)
SPREAD = (0.1, 0.6)
COMMON = 0.15
CRF = "cam+crf"


@dataclass
class DevSet:
    """One dev half: how ``loupe`` commands name it, its size and its ground truth."""

    name: str
    data_args: list[str]
    model_args: list[str]
    dev: int
    total: int
    spec: DatasetSpec
    class_map: str | None
    size: int

    def maps_folder(self, work: Path, variant: str) -> Path:
        return work / self.name / "maps" / variant

    def check_sorted(self) -> None:
        """The protocol's dev half is the first half of the sorted ids; ``--limit`` takes the
        first images in data-set order, so that order must be sorted."""
        full = open_spec(DatasetSpec(**{**self.spec.__dict__, "limit": 0}), images=False)
        ids = list(full.ids)
        if ids != sorted(ids) or len(ids) != self.total or self.dev != len(ids) // 2:
            raise SystemExit(f"{self.name}: ids not sorted or not {self.total}; the protocol's "
                             "dev half would not be --limit")

    def ground_truth(self, *, images: bool = False) -> tuple[Any, torch.Tensor, int]:
        """The dev data set, the ignored class indices, and N (background included)."""
        dataset = open_spec(self.spec, images=images)
        ignored = ignored_class_indices(dataset.class_names, (), self.class_map)
        return dataset, torch.tensor(ignored, dtype=torch.long), dataset.num_classes


def _maps(folder: Path, sample_id: str, ignored: torch.Tensor) -> tuple[torch.Tensor, ...]:
    maps, classes = load_map_file(folder / f"{sample_id}.npz")
    return torch.from_numpy(maps).float(), relabel(torch.from_numpy(classes).long(), ignored, -1)


@dataclass
class Truth:
    """The dev half's ids, relabelled ground-truth masks (uint8), ignored classes and N."""

    ids: list[str]
    masks: list[torch.Tensor]
    ignored: torch.Tensor
    num_classes: int


def load_truth(dev_set: DevSet) -> Truth:
    dataset, ignored, n = dev_set.ground_truth()
    masks = [relabel(dataset[i].mask, ignored, 255).to(torch.uint8) for i in range(dev_set.dev)]
    return Truth(list(dataset.ids[: dev_set.dev]), masks, ignored, n)


def folder_stats(folder: Path, truth: Truth, fraction: float) -> VariantStats:
    """``(I, T, 3, N)`` statistics of a map folder on the dev half, maps blurred by a Gaussian
    of ``fraction`` x the image's shorter side first."""
    thresholds = default_thresholds()
    rows, summed = [], None
    n = truth.num_classes
    for sample_id, gt in zip(truth.ids, truth.masks, strict=True):
        maps, classes = _maps(folder, sample_id, truth.ignored)
        sigma = fraction * min(gt.shape)
        if sigma > 0 and maps.shape[0]:
            maps = gaussian_blur(maps, sigma)
        conf = sweep_confusions(maps, classes, gt, thresholds, n)
        summed = conf if summed is None else summed + conf
        rows.append(confusion_stats(conf))
    return VariantStats(truth.ids, torch.stack(rows), summed)


def crf_stats(dev_set: DevSet, cam_folder: Path,
              thresholds: Sequence[float] | None = None) -> VariantStats:
    """CAM + dense CRF: at each of ``thresholds`` (default: every threshold of the sweep) the
    mask ``loupe masks --crf --threshold t`` writes (:func:`loupe.mapsets.pseudo_masks.
    pseudo_mask` with the image), scored against the ground truth as ``loupe evaluate
    --masks`` does (predicted ignored classes -> 0)."""
    if thresholds is None:
        thresholds = default_thresholds().tolist()
    dataset, ignored, n = dev_set.ground_truth(images=True)
    rows, summed = [], None
    for index in range(dev_set.dev):
        sample = dataset[index]
        image = rgb_tensor(sample.image)  # as loupe masks --crf reads it
        gt = relabel(sample.mask, ignored, 255)
        maps, classes = load_map_file(cam_folder / f"{sample.id}.npz")
        maps_t, classes_t = torch.from_numpy(maps).float(), torch.from_numpy(classes).long()
        per_t = []
        for threshold in thresholds:
            mask = pseudo_mask(maps_t, classes_t, threshold=threshold, image=image)
            per_t.append(confusion_matrix(relabel(mask, ignored, 0), gt, n))
        conf = torch.stack(per_t)
        summed = conf if summed is None else summed + conf
        rows.append(confusion_stats(conf))
        logger.info("crf %s %d/%d", dev_set.name, index + 1, dev_set.dev)
    return VariantStats(list(dataset.ids[: dev_set.dev]), torch.stack(rows), summed)


def stats_path(work: Path, dev_set: DevSet, name: str, fraction: float) -> Path:
    return work / dev_set.name / "stats" / f"{name}@{fraction:g}.npz"


def write_crf_stats(args: argparse.Namespace, dev_set: DevSet) -> None:
    path = stats_path(args.work, dev_set, CRF, 0.0)
    cam = dev_set.maps_folder(args.work, "cam")
    if path.is_file() or not cam.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    save_stats(path, crf_stats(dev_set, cam))


def all_stats(args: argparse.Namespace, dev_set: DevSet) -> dict[tuple[str, float], Any]:
    """(variant, fraction) -> statistics, cached in ``<work>/<set>/stats``; variants whose map
    folder is not complete are left out."""
    out = {}
    truth = None
    for variant in variants(dev_set.name):
        folder = dev_set.maps_folder(args.work, variant.name)
        if len(list(folder.glob("*.npz"))) < dev_set.dev:
            logger.info("%s/%s: maps not complete; left out", dev_set.name, variant.name)
            continue
        for fraction in FRACTIONS:
            path = stats_path(args.work, dev_set, variant.name, fraction)
            if not path.is_file() or path.stat().st_mtime < folder.stat().st_mtime:
                truth = truth or load_truth(dev_set)
                path.parent.mkdir(parents=True, exist_ok=True)
                save_stats(path, folder_stats(folder, truth, fraction))
            out[variant.name, fraction] = load_stats(path)
    crf = stats_path(args.work, dev_set, CRF, 0.0)
    if crf.is_file():
        out[CRF, 0.0] = load_stats(crf)
    return out


def summary(stats: torch.Tensor) -> dict[str, Any]:
    """Best mIoU and threshold, mIoU at the fixed thresholds, spread over 0.1-0.6 (points)."""
    thresholds = [round(t, 2) for t in default_thresholds().tolist()]
    curve = (100 * miou_from_stats(stats.sum(0))).tolist()
    best = max(range(len(curve)), key=curve.__getitem__)
    inside = [c for t, c in zip(thresholds, curve, strict=True) if SPREAD[0] <= t <= SPREAD[1]]
    return {"best": curve[best], "threshold": thresholds[best],
            "fixed": {f"{t:g}": curve[thresholds.index(t)] for t in FIXED},
            "spread": max(inside) - min(inside), "curve": curve}


def difference(args: argparse.Namespace, a: torch.Tensor, b: torch.Tensor,
               names: tuple[str, str]) -> dict[str, Any]:
    thresholds = [round(t, 6) for t in default_thresholds().tolist()]
    best, common = paired_differences(a, b, names, thresholds, COMMON, n=args.bootstrap, seed=0)
    return {"best": [best.observed, best.low, best.high],
            "at_0.15": [common.observed, common.low, common.high]}


def results(args: argparse.Namespace, dev_set: DevSet) -> dict[str, Any]:
    stats = all_stats(args, dev_set)
    described = {v.name: v for v in variants(dev_set.name)}
    rows: dict[str, Any] = {}
    for (name, fraction), value in stats.items():
        row = summary(value.stats)
        if ("cam", 0.0) in stats and (name, fraction) != ("cam", 0.0):
            row["vs_cam"] = difference(args, value.stats, stats["cam", 0.0].stats, (name, "cam"))
        if fraction > 0 and (name, 0.0) in stats:  # smoothing alone: smoothed minus raw
            row["vs_raw"] = difference(args, value.stats, stats[name, 0.0].stats, (name, name))
        reference = described[name].reference if name in described else None
        if reference and (reference, fraction) in stats:
            row["vs_reference"] = difference(args, value.stats,
                                             stats[reference, fraction].stats, (name, reference))
            row["reference"] = reference
        peer = described[name].peer if name in described else None
        if peer and (peer, 0.0) in stats:  # against CAM under the same treatment (raw CAM)
            row["vs_peer"] = difference(args, value.stats, stats[peer, 0.0].stats, (name, peer))
            row["peer"] = peer
        row["options"] = (described[name].describe() if name in described
                          else "cam, then loupe masks --crf")
        rows[f"{name}@{fraction:g}"] = row
    return {"set": dev_set.name, "images": dev_set.dev, "reference": REFERENCE, "rows": rows}


def table(data: dict[str, Any], fraction: float) -> str:
    head = ("| method | options | best mIoU | thr | @0.1 | @0.15 | @0.2 | @0.3 | spread 0.1-0.6 "
            "| minus CAM (raw), own best | minus its reference, own best |")
    lines = [head, "|" + "---|" * 11]
    for key, row in data["rows"].items():
        name, f = key.rsplit("@", 1)
        if float(f) != fraction and not (name == CRF and fraction == 0):
            continue
        fixed = " | ".join(f"{row['fixed'][f'{t:g}']:.1f}" for t in FIXED)
        ref = row.get("vs_reference")
        ref_cell = f"{interval_cell(ref['best'])} ({row['reference']})" if ref else ""
        cam = interval_cell(row["vs_cam"]["best"]) if "vs_cam" in row else ""
        lines.append(f"| {name} | `{row['options']}` | {row['best']:.1f} | {row['threshold']:.2f} "
                     f"| {fixed} | {row['spread']:.1f} | {cam} "
                     f"| {ref_cell} |")
    return "\n".join(lines)


def write_tables(args: argparse.Namespace, dev_set: DevSet) -> None:
    data = results(args, dev_set)
    folder = args.work / dev_set.name
    with atomic_path(folder / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n")
    parts = [f"# Dev screening: {dev_set.name} (first {dev_set.dev} of {dev_set.total} ids)\n"]
    for fraction in FRACTIONS:
        parts.append(f"## Smoothing sigma = {fraction:g} x shorter side\n\n"
                     f"{table(data, fraction)}\n")
    with atomic_path(folder / "tables.md") as tmp:
        Path(tmp).write_text("\n".join(parts))
    logger.info("%s: %s", dev_set.name, folder / "tables.md")
