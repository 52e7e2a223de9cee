"""Time a sampling method (shuffle, SmoothGrad, IG) on the CPU at several chunk sizes, each in
a fresh process: wall, system seconds and peak memory per call, for the CPU rule of
``loupe._autograd.gradient_chunk_size`` (docs/speed.md, "The CPU chunk of the gradient
methods").

A fresh process per chunk because the allocator's history decides how much of a call is
system time. The model is the shared ImageNet MobileNetV2 (``--model mobilenet_v2``, read
from ``$LOUPE_ASSETS/weights``) or a torchvision model with random weights; the input is one
seeded random image at ``--size H W``, ``--targets`` K ImageNet classes.

    OMP_NUM_THREADS=1 python bench/gradient_chunk.py --size 480 640 --targets 2 --chunks 16 4 2 1
    OMP_NUM_THREADS=1 python bench/gradient_chunk.py --model resnet50 --chunks 16 6 3 1
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision

import loupe

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "weights/mobilenet_v2_imagenet1k_coral.pth"


def model_of(name: str) -> torch.nn.Module:
    if name != "mobilenet_v2":
        return getattr(torchvision.models, name)().eval()
    assets = Path(os.environ.get("LOUPE_ASSETS", REPO.parent / "shared" / "assets"))
    model = torchvision.models.mobilenet_v2(num_classes=1000)
    model.load_state_dict(torch.load(assets / WEIGHTS, weights_only=True))
    return model.eval()


def one_chunk(args: argparse.Namespace, chunk: int) -> str:
    """The Markdown cells of ``args.repeats`` calls at ``chunk`` rows, after one warm-up."""
    torch.set_num_threads(1)
    model = model_of(args.model)
    x = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    targets = torch.tensor([[285, 281, 88, 243, 339][: args.targets]])
    count = "n_shuffles" if args.method == "shuffle" else "steps" if args.method == (
        "integrated-gradients") else "n_samples"
    options = {"chunk_size": chunk, count: args.samples}

    def call() -> None:
        loupe.explain(model, x, targets, method=args.method, **options)

    call()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.repeats):
        call()
    after = resource.getrusage(resource.RUSAGE_SELF)
    n = args.repeats
    return (f"| {chunk} | {(time.perf_counter() - start) / n:.2f} | "
            f"{(after.ru_utime - before.ru_utime) / n:.2f} | "
            f"{(after.ru_stime - before.ru_stime) / n:.2f} | {after.ru_maxrss / 2**20:.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    p.add_argument("--targets", type=int, default=1, choices=range(1, 6))
    p.add_argument("--method", default="shuffle",
                   choices=["shuffle", "smoothgrad", "integrated-gradients"])
    p.add_argument("--samples", type=int, default=16, help="T (default 16)")
    p.add_argument("--chunks", type=int, nargs="+", default=[16, 6, 4, 2, 1])
    p.add_argument("--repeats", type=int, default=2, help="timed calls per chunk")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one is not None:
        print(one_chunk(args, args.one), flush=True)
        return 0
    print(f"{args.method} on {args.model} at {args.size[0]}x{args.size[1]}, K = {args.targets}, "
          f"T = {args.samples}, one thread, mean of {args.repeats} calls after one warm-up")
    print("\n| chunk | wall s | user s | system s | peak resident GB |\n|---|---|---|---|---|")
    for chunk in args.chunks:
        child = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                 "--one", str(chunk)]
        subprocess.run(child, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
