"""The embedded demo: the whole WSSS evaluation on the synthetic set, offline, on a CPU.

Steps (fixed seed): render train and validation scenes (:mod:`loupe.data.synthetic`), train a
small GAP classifier (:func:`loupe.training.train_classifier`; by default the backbone
``"small-s4-local2"``, whose 16-pixel receptive field makes its CAM cover mostly the
badges: docs/synthetic-data.md), compute maps on the validation images for their
ground-truth classes with CAM, Grad-CAM, vanilla saliency, SmoothGrad, shuffle saliency and
the model-free baselines (when registered), turn
them into masks with IRN's background-threshold rule at every threshold (and CAM's masks
refined by a dense CRF, ``cam+crf``, when ``pydensecrf2`` is installed), measure the badge
statistic of every map (:func:`badge_statistic`: how much of the map's energy on the objects
lies on their small class-discriminative badges), and write a run folder::

    report.md               the mIoU table (best, at fixed thresholds, spread), the badge
                            statistic and figures
    results.json            everything measured, machine-readable
    miou_vs_threshold.png   mIoU against the background threshold, one curve per method
    overlays.png            image | ground truth | each method's mask at its best threshold
    maps.png                image | each method's map of the image's first class
    classifier/             the trained classifier (model.pt, model.json, history.json)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from loupe.api import explain
from loupe.data.spec import SyntheticSplits
from loupe.data.synthetic import SyntheticConfig, SyntheticDataset, make_synthetic
from loupe.io import read_json, write_json
from loupe.masks.crf import crf_refine_mask
from loupe.masks.threshold import masks_from_maps
from loupe.metrics.segmentation import confusion_matrix
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
    backbone: str = "small"
    pool: str = "gap"  # the classifier's global pooling: "gap" or "gmp"


SIZES = {
    # Design D18 of docs/synthetic-data.md (the first to meet the badge statistic's target):
    # 64x64 scenes, the stride-4 network with a 16-pixel receptive field, 24 epochs.
    # SmoothGrad and shuffle saliency at their library defaults (32 samples / shuffles).
    "default": DemoSize("default", 320, 64, 64, 24, 32, 0.1, 32, 32, 6,
                        backbone="small-s4-local2"),
    # for tests: seconds
    "small": DemoSize("small", 32, 8, 32, 2, 16, 0.1, 2, 2, 3),
}


@dataclass
class DemoResult:
    """What :func:`run_demo` measured: the folder, one sweep summary per method (and
    ``cam+crf``), the badge statistic per map method, the classifier's validation mAP and
    the seconds each stage took."""

    out: Path
    table: dict[str, SweepSummary]
    badges: dict[str, BadgeStatistic]
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


@dataclass(frozen=True)
class BadgeStatistic:
    """How much of a method's positive map energy inside the objects lies on their badges
    (docs/synthetic-data.md, fixed before any design was measured), over (image, class) pairs:
    ``energy_share`` mean of ``sum_badge ReLU(m) / sum_object ReLU(m)``; ``area_share`` mean
    of ``|badge| / |object|``; ``concentration`` their ratio (1 = spread evenly over the
    object); ``object_share`` mean of ``sum_object ReLU(m) / sum_image ReLU(m)``; ``pairs``
    counted, ``left_out`` pairs without a visible badge or positive energy on the object."""

    energy_share: float
    area_share: float
    concentration: float
    object_share: float
    pairs: int
    left_out: int


def badge_pair_shares(maps: torch.Tensor, classes: torch.Tensor, masks: torch.Tensor,
                      badge_masks: torch.Tensor) -> torch.Tensor:
    """Per (image, class) pair: badge energy share, badge area share, object energy share.

    Args:
        maps: ``(B, K, H, W)`` raw maps at image resolution (their ReLU is the energy).
        classes: ``(B, K)`` mask labels of the maps (``c`` paints mask value ``c``), -1 =
            padding.
        masks: ``(B, H, W)`` ground-truth labels; badge_masks: ``(B, H, W)`` bool, the
            visible badge pixels.

    Returns:
        ``(P, 3)`` float, one row per non-padding pair in row-major order; NaN rows for pairs
        whose class has no visible badge pixel or no positive energy on its object.
    """
    positive = maps.float().nan_to_num(0.0).clamp(min=0)
    inside = masks[:, None] == classes[..., None, None]  # (B, K, H, W); -1 never matches
    badge = inside & badge_masks[:, None].to(inside.device)
    energy_object = (positive * inside).sum((-2, -1))
    energy_badge = (positive * badge).sum((-2, -1))
    area_object = inside.sum((-2, -1)).float()
    area_badge = badge.sum((-2, -1)).float()
    shares = torch.stack([energy_badge / energy_object, area_badge / area_object,
                          energy_object / positive.sum((-2, -1))], -1)
    counted = (area_badge > 0) & (energy_object > 0)
    shares = torch.where(counted[..., None], shares, torch.full_like(shares, float("nan")))
    return shares[classes >= 0]


def badge_statistic(shares: torch.Tensor) -> BadgeStatistic:
    """Means over the counted rows of :func:`badge_pair_shares` ``(P, 3)`` (all NaN when no
    pair counts)."""
    counted = ~shares[:, 0].isnan()
    means = shares[counted].mean(0) if bool(counted.any()) else torch.full((3,), float("nan"))
    energy, area, on_object = (float(v) for v in means)
    return BadgeStatistic(energy, area, energy / area if area > 0 else float("nan"),
                          on_object, int(counted.sum()), int((~counted).sum()))


def badge_table(badges: dict[str, BadgeStatistic]) -> str:
    """Markdown table of :class:`BadgeStatistic` per method, shares in %; "—" where no pair
    counts (a map with no positive energy on any object, such as the all-background
    baseline)."""
    lines = ["| method | badge energy share (%) | badge area share (%) | concentration "
             "| object energy share (%) | pairs |", "|---|---|---|---|---|---|"]
    for name, b in badges.items():
        cells = [_cell(100 * b.energy_share, 1), _cell(100 * b.area_share, 1),
                 _cell(b.concentration, 2), _cell(100 * b.object_share, 1)]
        lines.append(f"| {name} | {' | '.join(cells)} | {b.pairs} |")
    return "\n".join(lines) + "\n"


def _cell(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def demo_classifier_config(size: DemoSize, seed: int, out: str | Path, progress: bool = False,
                           scenes: SyntheticConfig | None = None) -> ClassifierConfig:
    """The demo's classifier: the ``size.backbone`` GAP network from random weights on the synthetic
    train split (generator ``scenes``, default :class:`SyntheticConfig`), SGD at ``size.lr``
    (no 10x head: nothing is pretrained), mild rescaling (+-12.5%), flips and jitter without
    hue, no crop beyond the image size."""
    side = size.image_size
    splits = SyntheticSplits(size.n_train, size.n_val, side, seed, scenes or SyntheticConfig())
    return ClassifierConfig(
        dataset="synthetic", synthetic=splits, backbone=size.backbone, pretrained="none",
        epochs=size.epochs, batch_size=size.batch_size, lr=size.lr, head_lr_mult=1.0,
        resize_long=(round(side * 0.875), round(side * 1.125)), crop=side,
        jitter=(0.2, 0.2, 0.2, 0.0), seed=seed, out=str(out), progress=progress,
        pool=size.pool,
    )


@dataclass(frozen=True)
class DemoValidation:
    """The demo's validation split ready for the methods: ``data`` (the synthetic set),
    ``images`` ``(N, 3, H, W)`` preprocessed, ``targets`` ``(N, K)`` output indices and
    ``classes`` ``(N, K)`` mask labels of the ground-truth classes (-1 padded)."""

    data: SyntheticDataset
    images: torch.Tensor
    targets: torch.Tensor
    classes: torch.Tensor


def demo_validation(spec: DemoSize, seed: int, preprocessing: Any,
                    scenes: SyntheticConfig | None = None) -> DemoValidation:
    """The classifier's ``val`` split (seed ``seed + 1``), preprocessed for the model."""
    val = make_synthetic(spec.n_val, spec.image_size, seed + 1, scenes)
    targets = _targets(val.labels[:, 1:])
    classes = torch.where(targets >= 0, targets + 1, targets)  # output k -> mask label k + 1
    return DemoValidation(val, preprocessing(val.images.float() / 255), targets, classes)


def demo_maps(model: torch.nn.Module, val: DemoValidation, name: str, spec: DemoSize,
              seed: int, chunk: int = 16) -> torch.Tensor:
    """Maps ``(N, K, H, W)`` of method ``name`` for the validation targets, ``chunk`` images
    at a time (the methods' seeds make the maps independent of ``chunk``)."""
    return torch.cat([
        explain(model, val.images[first:first + chunk], val.targets[first:first + chunk],
                method=name, **method_options(name, spec, seed))
        for first in range(0, len(val.images), chunk)
    ])


def crf_sweep_confusions(images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
                         gt: torch.Tensor, thresholds: torch.Tensor,
                         num_classes: int) -> torch.Tensor:
    """Confusions ``(T, N, N)`` of IRN-rule masks refined by a dense CRF, per threshold.

    ``images`` ``(B, 3, H, W)`` uint8, ``maps`` ``(B, K, H, W)``, ``classes`` ``(B, K)`` mask
    labels, ``gt`` ``(B, H, W)``; each mask of :func:`masks_from_maps` at each threshold is
    refined by :func:`loupe.masks.crf.crf_refine_mask` (IRN's parameters)."""
    confusions = torch.zeros(len(thresholds), num_classes, num_classes, dtype=torch.long)
    for i, threshold in enumerate(thresholds.tolist()):
        masks = masks_from_maps(maps, classes, threshold)
        refined = torch.stack([crf_refine_mask(image, mask)
                               for image, mask in zip(images, masks, strict=True)])
        confusions[i] = confusion_matrix(refined, gt, num_classes).sum(0)
    return confusions


def run_demo(out: str | Path = "runs/demo", size: str = "default", seed: int = 0,
             progress: bool = False) -> DemoResult:
    """Run the demo into ``out`` (see the module docstring) and return what it measured."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of: {', '.join(SIZES)}")
    spec, out, methods = SIZES[size], Path(out), demo_methods()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    logger.info("training a small GAP classifier (%s) on %d synthetic %dx%d images",
                spec.backbone, spec.n_train, spec.image_size, spec.image_size)
    model_path = train_classifier(demo_classifier_config(spec, seed, out / "classifier",
                                                         progress))
    seconds["train"] = time.perf_counter() - start
    model, model_spec = load_model(model_path)
    history = _read_history(model_path.parent)
    val = demo_validation(spec, seed, preprocessing_of(model_spec))
    thresholds, keep = default_thresholds(), spec.overlay_rows
    table: dict[str, SweepSummary] = {}
    badges: dict[str, BadgeStatistic] = {}
    kept_maps: dict[str, torch.Tensor] = {}
    for name in methods:
        tic = time.perf_counter()
        maps = demo_maps(model, val, name, spec, seed)
        table[name] = sweep_summary(sweep_confusions(
            maps, val.classes, val.data.masks, thresholds, val.data.num_classes), thresholds)
        badges[name] = badge_statistic(badge_pair_shares(maps, val.classes, val.data.masks,
                                                         val.data.badge_masks))
        kept_maps[name] = maps[:keep]
        if name == "cam" and crf_available():
            confusions = crf_sweep_confusions(val.data.images, maps, val.classes,
                                              val.data.masks, thresholds, val.data.num_classes)
            table["cam+crf"] = sweep_summary(confusions, thresholds)
        seconds[name] = time.perf_counter() - tic
        logger.info("%s: best mIoU %.1f%%, badge energy share %.1f%% (%.1f s)", name,
                    100 * table[name].best_miou, 100 * badges[name].energy_share,
                    seconds[name])
    classifier_map = float(history[-1]["val_map"]) if history else float("nan")
    _write_outputs(out, val, kept_maps, table, badges, classifier_map, spec, seed, history,
                   seconds)
    seconds["total"] = time.perf_counter() - start
    return DemoResult(out, table, badges, classifier_map, seconds)


def crf_available() -> bool:
    """Whether the optional dense-CRF package (``pydensecrf2``) is installed."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        logger.info("pydensecrf2 is not installed: the demo leaves out CAM + CRF")
        return False
    return True


def _read_history(folder: Path) -> list[dict[str, Any]]:
    return list(read_json(folder / "history.json", "training history"))


def _write_outputs(out: Path, val: DemoValidation, kept_maps: dict[str, torch.Tensor],
                   table: dict[str, SweepSummary], badges: dict[str, BadgeStatistic],
                   classifier_map: float, spec: DemoSize, seed: int,
                   history: list[dict[str, Any]], seconds: dict[str, float]) -> None:
    curves = {name: (s.thresholds, s.miou) for name, s in table.items()}
    plot_miou_vs_threshold(out / "miou_vs_threshold.png", curves,
                           title="Synthetic set: mIoU against the background threshold")
    keep = len(next(iter(kept_maps.values())))
    images, classes = val.data.images[:keep], val.classes[:keep]
    masks = {"ground truth": val.data.masks[:keep], "badges": val.data.badge_masks[:keep].long()}
    for name, maps in kept_maps.items():
        masks[name] = masks_from_maps(maps, classes, table[name].best_threshold)
        if name == "cam" and "cam+crf" in table:
            at_best = masks_from_maps(maps, classes, table["cam+crf"].best_threshold)
            masks["cam+crf"] = torch.stack([crf_refine_mask(image, mask)
                                            for image, mask in zip(images, at_best, strict=True)])
    plot_overlay_grid(out / "overlays.png", images, masks)
    first_class = {name: maps[:, 0] for name, maps in kept_maps.items()}
    plot_overlay_grid(out / "maps.png", images, first_class)
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
        "badge_statistic": {name: asdict(b) for name, b in badges.items()},
        "seconds": seconds,
    }
    write_json(out / "results.json", results)
    write_report_md(out / "report.md", table, title="loupe demo: pseudo-mask mIoU",
                    notes=_report_notes(spec, seed, classifier_map, badges))


def _report_notes(spec: DemoSize, seed: int, classifier_map: float,
                  badges: dict[str, BadgeStatistic]) -> str:
    cam = badges["cam"]
    return (
        f"Synthetic set (docs/synthetic-data.md): {spec.n_train} training and {spec.n_val} "
        f"validation images of {spec.image_size}x{spec.image_size}, seed {seed}. A small GAP "
        f"classifier (backbone {spec.backbone}) trained for {spec.epochs} epochs reaches "
        f"validation mAP {100 * classifier_map:.1f}%. Maps are computed for each image's "
        "ground-truth classes; masks by IRN's background-threshold rule at every threshold "
        "0.00..0.95 (cam+crf: each CAM mask refined by a dense CRF with IRN's parameters); "
        "mIoU over background and the object classes. Methods run with their library "
        f"defaults; SmoothGrad with {spec.smoothgrad_samples} samples and shuffle saliency with "
        f"{spec.shuffles} shuffles (seed {seed}); {torch.get_num_threads()} CPU thread(s) "
        "(floating-point results depend slightly on it). One seed, one small model and a "
        "synthetic set: read the ranking with care, not as a result about real data.\n\n"
        f"The badge statistic: CAM puts {100 * cam.energy_share:.1f}% of its positive energy "
        f"inside the objects on their badges, which cover {100 * cam.area_share:.1f}% of the "
        f"objects ({cam.concentration:.1f}x denser than an even spread; target: at least 50% "
        "on at most 15%). Every method:\n\n" + badge_table(badges) + "\n"
        "![mIoU against the background threshold](miou_vs_threshold.png)\n\n"
        "Masks at each method's best threshold:\n\n![overlays](overlays.png)\n\n"
        "Maps of each image's first class:\n\n![maps](maps.png)\n"
    )
