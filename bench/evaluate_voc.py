"""Benchmark: threshold-sweep evaluation of the 1,464 real VOC 2012 `train` masks.

The ground truth is real (assets/voc/SegmentationClassAug, ids from assets/voc/voc12/
train.txt); the maps are synthesised from it (for each class present: the one-hot mask,
blurred by average pooling and bilinear upsampling, plus seeded Gaussian noise), so the
numbers measure the evaluation code at real scale, not any method's quality.

Timed separately: reading the PNG masks, synthesising the maps, and the evaluation itself
(``sweep_confusions`` at 20 thresholds, accumulated over all images, then
``sweep_summary``). Images/s is for the evaluation alone.

    python bench/evaluate_voc.py [--assets DIR] [--limit N] [--threads N] [--device cpu]

Seeded: the same maps and numbers on every run; only the timings vary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from loupe.masks import masks_from_maps
from loupe.masks.palette import load_mask_png
from loupe.metrics import (
    confusion_matrix,
    default_thresholds,
    sweep_confusions,
    sweep_summary,
)
from loupe.reports import markdown_table

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 21


def assets_root(option: str | None) -> Path:
    return Path(option or os.environ.get("LOUPE_ASSETS", REPO.parent / "shared" / "assets"))


def synthetic_maps(
    mask: torch.Tensor, generator: torch.Generator, blur: int, noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(K, H, W)`` maps and ``(K,)`` classes for the classes present in ``mask``."""
    classes = mask.unique()
    classes = classes[(classes > 0) & (classes < NUM_CLASSES)]
    onehot = (mask[None] == classes[:, None, None]).float()
    h, w = mask.shape
    if classes.numel():
        coarse = F.avg_pool2d(onehot[None], blur, ceil_mode=True)
        onehot = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    jitter = noise * torch.randn(onehot.shape, generator=generator)
    return (onehot + jitter).to(mask.device), classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", help="assets folder (default: LOUPE_ASSETS or ../shared)")
    parser.add_argument("--split", default="train", help="id list in voc12/ (default train)")
    parser.add_argument("--limit", type=int, default=0, help="first N images only")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (default 1: per-image tensors are too small to gain from "
             "more, and on a shared machine extra threads contend; 0 keeps torch's default)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="time each image's evaluation N times and also report the sum of the per-image "
             "minima (a proxy for an unloaded machine)",
    )
    parser.add_argument("--blur", type=int, default=16, help="pooling size of the map blur")
    parser.add_argument("--noise", type=float, default=0.15, help="noise std on the maps")
    parser.add_argument("--check", type=int, default=3,
                        help="verify the sweep against per-threshold masks on N images")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    root = assets_root(args.assets) / "voc"
    id_file = root / "voc12" / f"{args.split}.txt"
    if not id_file.is_file():
        print(f"evaluate_voc: {id_file} not found (set --assets or LOUPE_ASSETS)", file=sys.stderr)
        return 2
    ids = id_file.read_text().split()
    if args.limit:
        ids = ids[: args.limit]
    device = torch.device(args.device)
    thresholds = default_thresholds()
    generator = torch.Generator().manual_seed(0)

    load_s = synth_s = eval_s = min_s = 0.0
    pixels = 0
    total = torch.zeros(thresholds.numel(), NUM_CLASSES, NUM_CLASSES, dtype=torch.long,
                        device=device)
    for index, image_id in enumerate(ids):
        start = time.perf_counter()
        gt = load_mask_png(root / "SegmentationClassAug" / f"{image_id}.png").to(device)
        load_s += time.perf_counter() - start

        start = time.perf_counter()
        maps, classes = synthetic_maps(gt.cpu(), generator, args.blur, args.noise)
        maps, classes = maps.to(device), classes.to(device)
        synth_s += time.perf_counter() - start

        fastest = float("inf")
        for repeat in range(max(args.repeats, 1)):
            _sync(device)
            start = time.perf_counter()
            confusions = sweep_confusions(maps, classes, gt, thresholds, NUM_CLASSES)
            _sync(device)
            elapsed = time.perf_counter() - start
            fastest = min(fastest, elapsed)
            if repeat == 0:
                eval_s += elapsed
                total += confusions
        min_s += fastest
        pixels += gt.numel()

        if index < args.check:
            swept = sweep_confusions(maps, classes, gt, thresholds, NUM_CLASSES)
            for j, t in enumerate(thresholds.tolist()):
                single = confusion_matrix(masks_from_maps(maps, classes, t), gt, NUM_CLASSES)
                if not torch.equal(swept[j], single):
                    print(f"evaluate_voc: sweep differs from masks at t={t} on {image_id}",
                          file=sys.stderr)
                    return 1

    start = time.perf_counter()
    summary = sweep_summary(total.cpu(), thresholds)
    eval_s += time.perf_counter() - start

    n = len(ids)
    print(markdown_table({"synthetic (blurred, noisy one-hot)": summary}))
    print(f"images: {n} ({args.split}), pixels: {pixels / 1e6:.1f} M, "
          f"thresholds: {thresholds.numel()}, device: {device}, "
          f"threads: {torch.get_num_threads()}")
    print(f"evaluation (sweep + summary): {eval_s:.2f} s, {n / eval_s:.0f} images/s")
    if args.repeats > 1:
        print(f"sum of per-image minima over {args.repeats} repeats: {min_s:.2f} s, "
              f"{n / min_s:.0f} images/s")
    print(f"excluded: reading masks {load_s:.2f} s, map synthesis {synth_s:.2f} s")
    print(f"checked sweep == per-threshold masks on {min(args.check, n)} images")
    return 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    sys.exit(main())
