"""CPU seconds per call of loupe and pytorch-grad-cam, interleaved call by call.

speed.py measures wall-clock time per implementation, one block after the other; on a shared
machine whose load swings (other processes on the same cores) its ratios swing with it. This
script measures what the process itself spent, ``time.process_time`` around each call, with
one torch thread, and alternates loupe and the peer call by call, so both see the same
conditions; run it with ``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1`` so that no BLAS thread of one
implementation spins on into the other's call. Same setup as speed.py (its model with random
weights, seeded input and classes, layer4, its ``Case``s with their options and peer
factories); the median of ``--repeats`` calls after one untimed call each (slow cases: one
timed call, no untimed one). Only cases with a ``grad-cam`` peer are measured.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/cpu_time.py --methods eigencam fullgrad
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import speed
import torch

import loupe
from loupe.models import random_model


def cpu_seconds(call) -> float:
    start = time.process_time()
    call()
    return time.process_time() - start


def row(case: speed.Case, setup: speed.Setup, x: torch.Tensor, classes: torch.Tensor,
        repeats: int) -> str:
    """One Markdown row: loupe's and the peer's median CPU seconds per call and their ratio."""
    spec = loupe.get_method(case.method)
    layer = setup.layer if spec.uses_layer else None
    options = case.options(setup)

    def ours() -> object:
        return loupe.explain(setup.model, x, classes, method=case.method, target_layer=layer,
                             **options)

    loupe_times, peer_times = [], []
    for i in range(1 if case.slow else repeats):
        if i == 0 and not case.slow:
            ours()
        loupe_times.append(cpu_seconds(ours))
        with case.peers["grad-cam"](setup) as run:  # its hooks live only inside this block
            if i == 0 and not case.slow:
                run(x, classes)
            peer_times.append(cpu_seconds(lambda run=run: run(x, classes)))
    mine, theirs = statistics.median(loupe_times), statistics.median(peer_times)
    name = case.method + ("*" if case.slow else "")
    return f"| {name} | {len(x)} | {mine:.3f} | {theirs:.3f} | {theirs / mine:.2f}× |"


def main(argv: list[str] | None = None) -> int:
    cases = {c.method: c for c in speed.CASES if "grad-cam" in c.peers}
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--chunk", type=int, default=16, help="rows per forward of chunked peers")
    p.add_argument("--methods", nargs="+", choices=sorted(cases), default=sorted(cases))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    model = random_model(args.model, seed=args.seed)
    setup = speed.Setup(model, "layer4", args.size, args.chunk, 32)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(max(args.batch_sizes), 3, args.size, args.size, generator=g)
    classes = torch.randint(0, 1000, (max(args.batch_sizes),), generator=g)
    print(f"# CPU seconds per call: {args.model} at {args.size}x{args.size}, 1 thread\n")
    print("| method | batch | loupe CPU s/call | grad-cam CPU s/call | grad-cam / loupe |")
    print("|---|---|---|---|---|")
    for method in args.methods:
        for b in args.batch_sizes:
            print(row(cases[method], setup, x[:b], classes[:b], args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
