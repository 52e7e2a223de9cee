"""The embedded demo: the whole WSSS evaluation on the synthetic set, offline, on a CPU.

Steps (fixed seed): render train and validation scenes (:mod:`loupe.data.synthetic`), train a
small GAP classifier (:func:`loupe.training.train_classifier`, backbone ``"small"``), compute
maps on the validation images for their ground-truth classes with CAM, Grad-CAM, vanilla
saliency, SmoothGrad, shuffle saliency and the model-free baselines (when registered), turn
them into masks with IRN's background-threshold rule at every threshold, and write a run
folder::

    report.md               the mIoU table (best, at fixed thresholds, spread) and figures
    results.json            everything measured, machine-readable
    miou_vs_threshold.png   mIoU against the background threshold, one curve per method
    overlays.png            image | ground truth | each method's mask at its best threshold
    maps.png                image | each method's map of the image's first class
    classifier/             the trained classifier (model.pt, model.json, history.json)
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from loupe.api import explain
from loupe.data.spec import SyntheticSplits
from loupe.data.synthetic import SyntheticConfig, make_synthetic
from loupe.io import read_json, write_json
from loupe.masks.threshold import masks_from_maps
from loupe.metrics.sweep import SweepSummary, default_thresholds, sweep_confusions, sweep_summary
from loupe.models import load_model, preprocessing_of
from loupe.registry import list_methods
from loupe.reports import plot_miou_vs_threshold, plot_overlay_grid, write_report_md
from loupe.training.classifier import ClassifierConfig, train_classifier

logger = logging.getLogger(__name__)

METHODS = ("cam", "gradcam", "saliency", "smoothgrad", "shuffle")
BASELINES = ("baseline-background", "baseline-gaussian")


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: data, training and the stochastic methods' sample counts."""

    name: str
    n_train: int
    n_val: int
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    smoothgrad_samples: int
    shuffles: int
    overlay_rows: int


SIZES = {
    # measured end to end on 2 CPU cores: 34 s with 2 threads when idle; when shared with
    # other jobs (load ~3) 7 min with 2 threads but 61 s with 1 thread (the CLI's default).
    # SmoothGrad and shuffle saliency at their library defaults (32 samples / shuffles).
    "default": DemoSize("default", 320, 64, 64, 8, 32, 0.1, 32, 32, 6),
    # for tests: seconds
    "small": DemoSize("small", 32, 8, 32, 2, 16, 0.1, 2, 2, 3),
}


@dataclass
class DemoResult:
    """What :func:`run_demo` measured: the folder, one sweep summary per method, the
    classifier's validation mAP and the seconds each stage took."""

    out: Path
    table: dict[str, SweepSummary]
    classifier_map: float
    seconds: dict[str, float]


def demo_methods() -> list[str]:
    """The demo's methods, plus the model-free baselines that are registered."""
    registered = set(list_methods())
    missing = [m for m in METHODS if m not in registered]
    if missing:
        raise ValueError(f"the demo needs the methods {', '.join(missing)}, not registered")
    return [*METHODS, *(b for b in BASELINES if b in registered)]


def method_options(name: str, size: DemoSize, seed: int) -> dict[str, Any]:
    """Options of each method in the demo (library defaults otherwise)."""
    if name == "smoothgrad":
        return {"n_samples": size.smoothgrad_samples, "seed": seed}
    if name == "shuffle":
        return {"n_shuffles": size.shuffles, "seed": seed}
    return {}


def _targets(labels: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` multi-hot (no background column) -> ``(B, K)`` class indices, -1 padded."""
    k = max(int(labels.sum(1).max()), 1)
    order = labels.argsort(dim=1, descending=True, stable=True)[:, :k]
    present = labels.gather(1, order) > 0
    return torch.where(present, order, torch.full_like(order, -1))


def demo_classifier_config(size: DemoSize, seed: int, out: str | Path,
                           progress: bool = False) -> ClassifierConfig:
    """The demo's classifier: ``"small"`` GAP network from random weights on the synthetic
    train split, SGD at ``size.lr`` (no 10x head: nothing is pretrained), mild rescaling
    (+-12.5%), flips and jitter without hue, no crop beyond the image size."""
    side = size.image_size
    return ClassifierConfig(
        dataset="synthetic", synthetic=SyntheticSplits(size.n_train, size.n_val, side, seed),
        backbone="small", pretrained="none", epochs=size.epochs, batch_size=size.batch_size,
        lr=size.lr, head_lr_mult=1.0, resize_long=(round(side * 0.875), round(side * 1.125)),
        crop=side, jitter=(0.2, 0.2, 0.2, 0.0), seed=seed, out=str(out), progress=progress,
    )


def run_demo(out: str | Path = "runs/demo", size: str = "default", seed: int = 0,
             progress: bool = False) -> DemoResult:
    """Run the demo into ``out`` (see the module docstring) and return what it measured."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of: {', '.join(SIZES)}")
    spec = SIZES[size]
    out = Path(out)
    methods = demo_methods()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    side = spec.image_size
    config = demo_classifier_config(spec, seed, out / "classifier", progress)
    logger.info("training a small GAP classifier on %d synthetic %dx%d images", spec.n_train,
                side, side)
    model_path = train_classifier(config)
    seconds["train"] = time.perf_counter() - start
    model, model_spec = load_model(model_path)
    history = _read_history(model_path.parent)
    val = make_synthetic(spec.n_val, side, seed + 1)  # the classifier's "val" split
    images = preprocessing_of(model_spec)(val.images.float() / 255)
    targets = _targets(val.labels[:, 1:])
    classes = torch.where(targets >= 0, targets + 1, targets)  # output k -> mask label k + 1
    thresholds = default_thresholds()
    table: dict[str, SweepSummary] = {}
    keep = spec.overlay_rows
    kept_maps: dict[str, torch.Tensor] = {}
    for name in methods:
        tic = time.perf_counter()
        confusions = torch.zeros(len(thresholds), val.num_classes, val.num_classes,
                                 dtype=torch.long)
        chunks = []
        for first in range(0, len(images), 16):
            rows = slice(first, first + 16)
            maps = explain(model, images[rows], targets[rows], method=name,
                           **method_options(name, spec, seed))
            confusions += sweep_confusions(maps, classes[rows], val.masks[rows], thresholds,
                                           val.num_classes)
            if first < keep:
                chunks.append(maps[: keep - first])
        kept_maps[name] = torch.cat(chunks)[:keep]
        table[name] = sweep_summary(confusions, thresholds)
        seconds[name] = time.perf_counter() - tic
        logger.info("%s: best mIoU %.1f%% at threshold %.2f (%.1f s)", name,
                    100 * table[name].best_miou, table[name].best_threshold, seconds[name])
    classifier_map = float(history[-1]["val_map"]) if history else float("nan")
    _write_outputs(out, val, keep, classes[:keep], kept_maps, table, classifier_map, spec,
                   seed, history, seconds)
    seconds["total"] = time.perf_counter() - start
    return DemoResult(out, table, classifier_map, seconds)


def _read_history(folder: Path) -> list[dict[str, Any]]:
    return list(read_json(folder / "history.json", "training history"))


def _write_outputs(out: Path, val: Any, keep: int, classes: torch.Tensor,
                   kept_maps: dict[str, torch.Tensor], table: dict[str, SweepSummary],
                   classifier_map: float, spec: DemoSize, seed: int,
                   history: list[dict[str, Any]], seconds: dict[str, float]) -> None:
    curves = {name: (s.thresholds, s.miou) for name, s in table.items()}
    plot_miou_vs_threshold(out / "miou_vs_threshold.png", curves,
                           title="Synthetic set: mIoU against the background threshold")
    masks = {"ground truth": val.masks[:keep]}
    for name, maps in kept_maps.items():
        masks[name] = masks_from_maps(maps, classes, table[name].best_threshold)
    plot_overlay_grid(out / "overlays.png", val.images[:keep], masks)
    first_class = {name: maps[:, 0] for name, maps in kept_maps.items()}
    plot_overlay_grid(out / "maps.png", val.images[:keep], first_class)
    results = {
        "demo": asdict(spec),
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "synthetic": {"config": asdict(SyntheticConfig()), "train_seed": seed,
                      "val_seed": seed + 1},
        "classifier": {"val_map": classifier_map, "history": history,
                       "path": str(out / "classifier" / "model.pt")},
        "thresholds": list(table[next(iter(table))].thresholds),
        "methods": table,
        "seconds": seconds,
    }
    write_json(out / "results.json", results)
    notes = (
        f"Synthetic set (docs/synthetic-data.md): {spec.n_train} training and {spec.n_val} "
        f"validation images of {spec.image_size}x{spec.image_size}, seed {seed}. A small GAP "
        f"classifier trained for {spec.epochs} epochs reaches validation mAP "
        f"{100 * classifier_map:.1f}%. Maps are computed for each image's ground-truth "
        "classes; masks by IRN's background-threshold rule at every threshold 0.00..0.95; "
        "mIoU over background and the object classes. Methods run with their library "
        f"defaults; SmoothGrad with {spec.smoothgrad_samples} samples and shuffle saliency "
        f"with {spec.shuffles} shuffles (seed {seed}); {torch.get_num_threads()} CPU "
        "thread(s) (floating-point results depend slightly on it). One seed, one small model "
        "and a synthetic set: read the ranking with care, not as a result about real data."
        "\n\n"
        "![mIoU against the background threshold](miou_vs_threshold.png)\n\n"
        "Masks at each method's best threshold:\n\n![overlays](overlays.png)\n\n"
        "Maps of each image's first class:\n\n![maps](maps.png)\n"
    )
    write_report_md(out / "report.md", table, title="loupe demo: pseudo-mask mIoU",
                    notes=notes)
