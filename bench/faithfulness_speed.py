"""Images per second of loupe's faithfulness metrics against torch-cam and pytorch-grad-cam.

One run, one model (torchvision, random seeded weights, eval), one seeded batch of images,
the same maps (loupe's Grad-CAM at the model's last block) and the same targets (each image's
top-1 class) for every implementation, matched settings:

- confidence: loupe ``confidence_change`` (Average Drop and Increase in Confidence, one
  call) vs torch-cam ``ClassificationMetric.update`` (both) and pytorch-grad-cam
  ``DropInConfidence`` + ``IncreaseInConfidence`` (two calls, as a user computes both).
- deletion+insertion: loupe ``deletion_curves`` + ``insertion_curves`` (zero baseline, 20
  steps) vs torch-cam ``DeletionInsertionMetric`` (its defaults: zero baseline, 20 steps).
- road: loupe ``road`` (MoRF and LeRF at 10..90%, noisy linear imputation) vs
  pytorch-grad-cam ``ROADCombined`` (the same 9 percentiles, both orders).

Every implementation is warmed up once (on one image), then timed on the batch in
``--repeats`` rounds that interleave the implementations (median); chunked ones get the same
rows per forward (``--chunk``). Only ratios measured in the same run count.

    python bench/faithfulness_speed.py --quick
    python bench/faithfulness_speed.py --device cuda --images 16 --out bench/faithfulness.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn

from loupe import explain
from loupe.io import atomic_path
from loupe.metrics.faithfulness import (
    Scorer,
    confidence_change,
    deletion_curves,
    insertion_curves,
    road,
)
from loupe.models import random_model


class FixedMaps:
    """A torch-cam CAM extractor that returns given maps (both sides score the same maps)."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, *, targets=None, **kw):
        return [self.maps[: scores.shape[0]]]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


def timed(function: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object],
          images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor) -> float:
    """Seconds of one call on the batch."""
    sync(images)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        function(images, maps, classes)
    sync(images)
    return time.perf_counter() - start


def median_seconds(entries: list[tuple[str, Callable]], images: torch.Tensor,
                   maps: torch.Tensor, classes: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds per implementation over ``repeats`` rounds, the implementations
    interleaved within each round (so a change of machine load hits all of them), after one
    warm-up call each on the first image."""
    for _, function in entries:
        with contextlib.redirect_stdout(io.StringIO()):
            function(images[:1], maps[:1], classes[:1])
    times: dict[str, list[float]] = {name: [] for name, _ in entries}
    for _ in range(repeats):
        for name, function in entries:
            times[name].append(timed(function, images, maps, classes))
    return {name: statistics.median(values) for name, values in times.items()}


def sync(images: torch.Tensor) -> None:
    if images.device.type == "cuda":
        torch.cuda.synchronize()


def implementations(model: nn.Module, chunk: int) -> dict[str, list[tuple[str, Callable]]]:
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

    softmax = partial(torch.softmax, dim=-1)

    def grad_cam_targets(classes):
        return [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]

    def torchcam_confidence(x, m, c):
        metric = ClassificationMetric(FixedMaps(model, m), softmax)
        metric.update(x, class_idx=c.tolist())
        return metric.summary()

    def grad_cam_confidence(x, m, c):
        cams = m.cpu().numpy().astype(np.float32)
        DropInConfidence()(x, cams, grad_cam_targets(c), model)
        return IncreaseInConfidence()(x, cams, grad_cam_targets(c), model)

    def torchcam_deletion(x, m, c):
        metric = DeletionInsertionMetric(FixedMaps(model, m), softmax, batch_size=chunk)
        metric.update(x, class_idx=c.tolist())
        return metric.summary()

    def loupe_deletion(x, m, c):
        scorer = Scorer(model, x, c, chunk_size=chunk)  # one clean forward for both curves
        deletion_curves(model, x, m, baseline=0.0, scorer=scorer)
        return insertion_curves(model, x, m, baseline=0.0, scorer=scorer)

    def grad_cam_road(x, m, c):
        return ROADCombined()(x, m.cpu().numpy().astype(np.float32), grad_cam_targets(c), model)

    return {
        "confidence": [
            ("loupe", lambda x, m, c: confidence_change(model, x, m, c, chunk_size=chunk)),
            ("torch-cam", torchcam_confidence),
            ("grad-cam", grad_cam_confidence),
        ],
        "deletion+insertion": [("loupe", loupe_deletion), ("torch-cam", torchcam_deletion)],
        "road": [
            ("loupe", lambda x, m, c: road(model, x, m, c, chunk_size=chunk)),
            ("grad-cam", grad_cam_road),
        ],
    }


FORWARDS = {  # perturbed forwards per image and map, plus one clean forward per image
    "confidence": "1 + 1 clean (grad-cam: 2 + 2 clean)",
    "deletion+insertion": "20 + 20 + 1 clean (torch-cam: 39 + 1 clean, shares the all-baseline)",
    "road": "18 (torch-cam: n/a; grad-cam: 18 + 18 clean)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--metrics", nargs="+", default=["confidence", "deletion+insertion",
                                                         "road"])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--quick", action="store_true", help="resnet18 at 64x64, 4 images")
    parser.add_argument("--out", help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.size, args.images = "resnet18", 64, 4
    torch.manual_seed(0)
    model = random_model(args.model, num_classes=1000).to(args.device)
    images = torch.randn(args.images, 3, args.size, args.size,
                         generator=torch.Generator().manual_seed(1)).to(args.device)
    with torch.no_grad():
        classes = model(images).argmax(1)
    maps = explain(model, images, classes, method="gradcam")[:, 0]
    maps = (maps - maps.amin((1, 2), keepdim=True)) / (
        maps.amax((1, 2), keepdim=True) - maps.amin((1, 2), keepdim=True)).clamp(min=1e-8)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"{args.model} at {args.size}x{args.size}, {args.images} images, chunk {args.chunk}, "
        f"median of {args.repeats} interleaved rounds, "
        f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, load {load:.2f} at start",
        "",
        "| metric | implementation | images/s | loupe / this | forwards per image |",
        "|---|---|---:|---:|---|",
    ]
    for metric, entries in implementations(model, args.chunk).items():
        if metric not in args.metrics:
            continue
        seconds = median_seconds(entries, images, maps, classes, args.repeats)
        for name, value in seconds.items():
            ratio = value / seconds["loupe"]
            lines.append(f"| {metric} | {name} | {args.images / value:.2f} | {ratio:.2f} | "
                         f"{FORWARDS[metric] if name == 'loupe' else ''} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"\nload {load:.2f} at the end")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
