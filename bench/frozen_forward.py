"""The no-grad forward of a model against its frozen copy (loupe._frozen), per model and size.

For each case: a torchvision model with random seeded weights (eval), a seeded batch; the
model's own forward and ``loupe._frozen.inference_forward``'s copy, both under
``torch.no_grad``, called alternately (bench/paired.py: rounds rotate the order), process
CPU time per call; the median per-round ratio model / copy with its 95% bootstrap interval,
the largest relative difference of the outputs, and the seconds it took to freeze the model.

    OMP_NUM_THREADS=1 python bench/frozen_forward.py
    OMP_NUM_THREADS=1 python bench/frozen_forward.py --cases resnet18:64:16 mobilenet_v2:224:4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import torch

from loupe import _frozen
from loupe._frozen import inference_forward
from loupe.models import random_model

sys.path.insert(0, os.path.dirname(__file__))
from paired import interleaved, paired_ratio  # noqa: E402

CASES = ("resnet18:64:16", "resnet18:224:4", "resnet50:224:4", "mobilenet_v2:224:4",
         "efficientnet_b0:224:4", "convnext_tiny:224:4", "densenet121:224:4", "vit_b_16:224:4")


def one_case(spec: str, rounds: int) -> str:
    name, size, batch = spec.split(":")
    model = random_model(name, seed=0)
    x = torch.randn(int(batch), 3, int(size), int(size),
                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        start = time.process_time()
        forward = inference_forward(model, x, _frozen.FROZEN_MIN_ROWS)
        freeze_s = time.process_time() - start
        if forward is model:
            return f"| {name} | {size} | {batch} | not frozen | | | {freeze_s:.2f} |"
        expected = model(x)
        error = float((forward(x) - expected).abs().max() / expected.abs().max())

    def entry(fn):
        @contextlib.contextmanager
        def enter():
            with torch.no_grad():
                yield lambda: fn(x)
        return enter

    samples = interleaved({"model": entry(model), "frozen": entry(forward)}, rounds, True,
                          torch.device("cpu"), lambda who, e: print(f"{who} failed: {e}"))
    ratio, low, high = paired_ratio(samples["model"], samples["frozen"])
    model_ms = 1e3 * sorted(c for _, c in samples["model"])[rounds // 2]
    frozen_ms = 1e3 * sorted(c for _, c in samples["frozen"])[rounds // 2]
    return (f"| {name} | {size} | {batch} | {model_ms:.1f} | {frozen_ms:.1f} | "
            f"{ratio:.2f}× [{low:.2f}, {high:.2f}] | {error:.1e} | {freeze_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="MODEL:SIZE:BATCH")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| model | size | batch | model CPU ms | frozen CPU ms | model / frozen, per round "
          "[95%] | largest relative output difference | freezing s |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.cases:
        print(one_case(spec, args.rounds), flush=True)


if __name__ == "__main__":
    main()
