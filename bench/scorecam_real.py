"""Score-CAM on a real model and real photos: loupe against pytorch-grad-cam and torchcam.

speed.py times Score-CAM on a resnet18 with random weights, where almost every channel of the
target layer is alive, so every implementation makes the same forwards. On a trained network
after a ReLU many channels are zero everywhere; loupe scores all of those with one forward of
a zero image (``loupe.methods.scorecam.masked_scores``), the peers make one forward each.
This script measures what that is worth: the shared ImageNet MobileNetV2 (``tf_same_padding``,
TF preprocessing) on the shared photos at 224x224, target layer ``features`` (1280 channels
after ReLU6), top-1 class, 32 masked inputs per forward for all three, one thread. Per photo:
the live channels, ``--warmup`` untimed calls of each, then ``--pairs`` rounds alternating loupe and
each peer, CPU time per call (``time.process_time``), the median ratio peer / loupe. (That
loupe's Score-CAM is pytorch-grad-cam's is the oracle tests' business:
tests/methods/test_cam_family.py.)

    OMP_NUM_THREADS=1 python bench/scorecam_real.py --photos cat_720p.jpg --warmup 0 --pairs 2

    OMP_NUM_THREADS=1 python bench/scorecam_real.py --photos cat_720p.jpg --loupe-chunks 32 8 4

    OMP_NUM_THREADS=1 python bench/scorecam_real.py --padding torchvision   # frozen copy

A call is 15-45 s of one core (1280 masked inputs through MobileNetV2 at 224x224). With
``--loupe-chunks`` the columns are wall / user / system seconds / minor page faults.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import loupe
from loupe.hooks import hooked
from loupe.models import apply_patch, model_from_state_dict

sys.path.insert(0, os.path.dirname(__file__))
from faithfulness_photos import REPO, photos  # noqa: E402
from speed_peers import Setup, grad_cam, torchcam  # noqa: E402

LAYER = "features"


def live_channels(model: torch.nn.Module, image: torch.Tensor) -> int:
    with hooked(model, [LAYER], leaf=False) as captured, torch.no_grad():
        model(image)
    return int(captured[LAYER][0].flatten(1).ne(0).any(1).sum())


def loupe_alone(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, chunk: int
                ) -> str:
    """One call's wall, user and system seconds and minor page faults, as table cells."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    loupe.explain(model, x, target, method="scorecam", target_layer=LAYER, chunk_size=chunk)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return (f"{wall:.1f} | {after.ru_utime - before.ru_utime:.1f} | "
            f"{after.ru_stime - before.ru_stime:.1f} | {after.ru_minflt - before.ru_minflt}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=Path, default=Path(os.environ.get(
        "LOUPE_ASSETS", REPO.parent / "shared" / "assets")))
    parser.add_argument("--photos", nargs="+", help="file names in photos/ (default: all)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each first")
    parser.add_argument("--loupe-chunks", type=int, nargs="+",
                        help="instead: loupe alone at each of these chunks, wall / user / "
                        "system seconds and minor page faults of one call")
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--padding", choices=("tf", "torchvision"), default="tf",
                        help="tf: the assets' TF 'SAME' padding pre-hooks (the model as the "
                        "weights were trained; its hooks keep loupe from its frozen copy); "
                        "torchvision: the network's own symmetric padding, which can be frozen")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    weights = args.assets / "weights"
    model = model_from_state_dict("mobilenet_v2", weights / "mobilenet_v2_imagenet1k_coral.pth")
    if args.padding == "tf":
        model = apply_patch(model, f"{weights / 'tf_same_padding.py'}:tf_same_padding")
    model.eval()
    images, names = photos(args.assets, 224)
    setup = Setup(model, LAYER, 224, args.chunk, 32)
    print(f"MobileNetV2 (coral weights, {args.padding} padding), {LAYER}, 224x224, "
          f"chunk {args.chunk}, 1 thread, "
          f"{args.pairs} pairs per peer; load {os.getloadavg()[0]:.1f}")
    print("| photo | live channels | peer | loupe s/call | peer s/call | peer / loupe |")
    print("|---|---|---|---|---|---|")
    for image, name in zip(images, names, strict=True):
        if args.photos and name not in args.photos:
            continue
        x = image[None]
        with torch.no_grad():
            target = model(x).argmax(1)
        live = live_channels(model, x)
        if args.loupe_chunks:
            for chunk in args.loupe_chunks:
                print(f"| {name} | {live} / 1280 | loupe alone, chunk {chunk} | "
                      + loupe_alone(model, x, target, chunk) + " |", flush=True)
            continue

        def ours(x=x, target=target) -> torch.Tensor:
            return loupe.explain(model, x, target, method="scorecam", target_layer=LAYER,
                                 chunk_size=args.chunk)

        for peer, factory in (("grad-cam", grad_cam("ScoreCAM")),
                              ("torchcam", torchcam("ScoreCAM"))):
            # the peer's hooks are on the model only around its own calls (a hook of theirs
            # would keep loupe from its frozen copy, loupe._frozen)
            for _ in range(args.warmup):
                ours()
                with factory(setup) as run:
                    run(x, target)
            pairs = []
            for _ in range(args.pairs):
                start = time.process_time()
                ours()
                middle = time.process_time()
                with factory(setup) as run:
                    run(x, target)
                pairs.append((middle - start, time.process_time() - middle))
            ratio = statistics.median(p / o for o, p in pairs)
            loupe_s = statistics.median(o for o, _ in pairs)
            peer_s = statistics.median(p for _, p in pairs)
            print(f"| {name} | {live} / 1280 | {peer} | {loupe_s:.1f} | {peer_s:.1f} | "
                  f"{ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
