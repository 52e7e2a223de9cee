"""The no-grad forward of a model against its frozen copy (loupe._frozen), per model and size.

For each case: a torchvision model with random seeded weights (eval), a seeded batch; the
model's own forward and ``loupe._frozen.inference_forward``'s copy, both under
``torch.no_grad``, called alternately (bench/paired.py: rounds rotate the order), process
CPU time per call; the median per-round ratio model / copy with its 95% bootstrap interval,
the largest relative difference of the outputs, and the seconds it took to freeze the model.

    OMP_NUM_THREADS=1 python bench/frozen_forward.py
    OMP_NUM_THREADS=1 python bench/frozen_forward.py --cases resnet18:64:16 mobilenet_v2:224:4

With ``--layer L``, the forward of CAM and its kin instead: the model with loupe's capturing
hook on ``L`` against ``loupe._frozen_layer``'s copy that returns ``L``'s output with the
model's, both under ``torch.inference_mode``; ``--kind optimized`` times the copy that also
went through ``torch.jit.optimize_for_inference`` (the one used for 64 or more images), at
any batch:

    OMP_NUM_THREADS=1 python bench/frozen_forward.py --layer layer4 \
        --cases resnet18:64:1 resnet18:64:4 resnet18:224:1 resnet50:224:1
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
from loupe._frozen_layer import _frozen_with_layer
from loupe.hooks import hooked
from loupe.models import random_model

sys.path.insert(0, os.path.dirname(__file__))
from paired import interleaved, median_cpu_ms, paired_ratio  # noqa: E402

CASES = ("resnet18:64:16", "resnet18:224:4", "resnet50:224:4", "mobilenet_v2:224:4",
         "efficientnet_b0:224:4", "convnext_tiny:224:4", "densenet121:224:4", "vit_b_16:224:4")


def one_case(spec: str, rounds: int, layer: str | None = None, optimized: bool = False) -> str:
    name, size, batch = spec.split(":")
    model = random_model(name, seed=0)
    x = torch.randn(int(batch), 3, int(size), int(size),
                    generator=torch.Generator().manual_seed(1))
    grad_off = torch.no_grad if layer is None else torch.inference_mode
    with hooked(model, [layer] if layer else [], freeze=False), grad_off():
        start = time.process_time()
        if layer is None:
            forward = inference_forward(model, x, _frozen.FROZEN_MIN_ROWS)
        else:
            forward = _frozen_with_layer(model, layer, optimized) or model
        freeze_s = time.process_time() - start
        if forward is model:
            return f"| {name} | {size} | {batch} | not frozen | | | {freeze_s:.2f} |"
        expected = model(x)
        got = forward(x) if layer is None else forward(x)[1]
        error = float((got - expected).abs().max() / expected.abs().max())

    def entry(fn):
        @contextlib.contextmanager
        def enter():
            with hooked(model, [layer] if layer else [], freeze=False), grad_off():
                yield lambda: fn(x)
        return enter

    samples = interleaved({"model": entry(model), "frozen": entry(forward)}, rounds, True,
                          torch.device("cpu"), lambda who, e: print(f"{who} failed: {e}"))
    ratio, low, high = paired_ratio(samples["model"], samples["frozen"])
    model_ms, frozen_ms = median_cpu_ms(samples["model"]), median_cpu_ms(samples["frozen"])
    return (f"| {name} | {size} | {batch} | {model_ms:.1f} | {frozen_ms:.1f} | "
            f"{ratio:.2f}× [{low:.2f}, {high:.2f}] | {error:.1e} | {freeze_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="MODEL:SIZE:BATCH")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layer", help="time the copy that also returns this layer's output")
    parser.add_argument("--kind", choices=("plain", "optimized"), default="plain",
                        help="with --layer: the copy without or with optimize_for_inference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}"
          + (f", layer {args.layer}, {args.kind} copy" if args.layer else ""))
    print("| model | size | batch | model CPU ms | frozen CPU ms | model / frozen, per round "
          "[95%] | largest relative output difference | freezing s |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.cases:
        print(one_case(spec, args.rounds, args.layer, args.kind == "optimized"), flush=True)


if __name__ == "__main__":
    main()
