"""Forward + input-gradient backward of a model against loupe._frozen_grad's copy, per case.

For each case: a torchvision model with random seeded weights (eval, parameters frozen, as in
an explainer block), a seeded batch and seeded target classes; the gradient of the target
logits' sum with respect to the input through the model and through the copy (frozen with
``optimize_numerics=False``), called alternately (bench/paired.py: rounds rotate the order),
process CPU time per call; the median per-round ratio model / copy with its 95% bootstrap
interval, whether the outputs and the input gradients are equal bit for bit (the largest
difference otherwise), and the seconds it took to freeze the model.

    OMP_NUM_THREADS=1 python bench/frozen_gradient.py
    OMP_NUM_THREADS=1 python bench/frozen_gradient.py --cases resnet18:64:1 resnet50:224:1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import torch

from loupe._frozen_grad import gradient_copy
from loupe.models import random_model

sys.path.insert(0, os.path.dirname(__file__))
from paired import interleaved, median_cpu_ms, paired_ratio  # noqa: E402

CASES = ("resnet18:64:1", "resnet18:64:4", "resnet18:224:1", "resnet50:224:1",
         "mobilenet_v2:224:1", "densenet121:64:1")


def input_gradient(forward, x: torch.Tensor, classes: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The output and ``d sum_b output[b, classes[b]] / d x`` through ``forward``."""
    leaf = x.detach().requires_grad_(True)
    output = forward(leaf)
    (grad,) = torch.autograd.grad(output.gather(1, classes[:, None]).sum(), leaf)
    return output.detach(), grad


def one_case(spec: str, rounds: int) -> str:
    name, size, batch = spec.split(":")
    model = random_model(name, seed=0).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(int(batch), 3, int(size), int(size), generator=g)
    classes = torch.randint(0, 1000, (int(batch),), generator=g)
    start = time.process_time()
    copied = gradient_copy(model, x)
    freeze_s = time.process_time() - start
    if copied is None:
        return f"| {name} | {size} | {batch} | not copied | | | | {freeze_s:.2f} |"
    for _ in range(3):  # TorchScript's profiling runs, before its optimised graph
        got = input_gradient(copied, x, classes)
    expected = input_gradient(model, x, classes)
    same = [torch.equal(a, b) for a, b in zip(got, expected, strict=True)]
    gap = float((got[1] - expected[1]).abs().max() / expected[1].abs().max())

    def entry(forward):
        @contextlib.contextmanager
        def enter():
            yield lambda: input_gradient(forward, x, classes)
        return enter

    samples = interleaved({"model": entry(model), "copy": entry(copied)}, rounds, True,
                          torch.device("cpu"), lambda who, e: print(f"{who} failed: {e}"))
    ratio, low, high = paired_ratio(samples["model"], samples["copy"])
    model_ms, copy_ms = median_cpu_ms(samples["model"]), median_cpu_ms(samples["copy"])
    equal = "yes" if all(same) else f"no (output {same[0]}, gradient {gap:.1e})"
    return (f"| {name} | {size} | {batch} | {model_ms:.1f} | {copy_ms:.1f} | "
            f"{ratio:.3f}× [{low:.3f}, {high:.3f}] | {equal} | {freeze_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="MODEL:SIZE:BATCH")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| model | size | batch | model CPU ms | copy CPU ms | model / copy, per round [95%] "
          "| bit for bit | freezing s |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.cases:
        print(one_case(spec, args.rounds), flush=True)


if __name__ == "__main__":
    main()
