"""Peak memory of one row of a sampling method's forward + input-gradient backward, in
multiples of the row's float32 input bytes: the factors behind
``loupe._autograd.gradient_chunk_size``.

Each (model, K) pair runs in a fresh process on the CPU: torchvision model, random weights,
eval, parameters frozen; ``grads_per_target`` of K logits for 2 rows, then for 10 rows; the
growth of the peak resident set size (``VmHWM``) between the two, over 8 rows, is one row's
cost. On CUDA ``tests/test_cuda.py`` checks the same factors with
``torch.cuda.max_memory_allocated``.

    python bench/chunk_memory.py                     # the models and K of _autograd.py
    python bench/chunk_memory.py --models resnet50 --targets 1 --size 448
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import sys, torch, torchvision
from loupe._autograd import grads_per_target
torch.set_num_threads(1)
name, size, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = torchvision.models.get_model(name, weights=None, num_classes=1000).eval()
model.requires_grad_(False)
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
def run(rows):
    x = torch.randn(rows, 3, size, size).requires_grad_(True)
    grads_per_target(model(x)[:, :k], x)
run(1); run(2); low = peak(); run(10); high = peak()
print((high - low) / 8 / (3 * size * size * 4))
"""

MODELS = ("convnext_tiny", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "resnet50",
          "densenet121")


def factor(model: str, size: int, targets: int) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, model, str(size), str(targets)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--targets", type=int, nargs="+", default=[1, 4])
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    print(f"| model | {' | '.join(f'K={k}' for k in args.targets)} | per extra target |")
    print("|---|" + "---|" * (len(args.targets) + 1))
    for model in args.models:
        values = [factor(model, args.size, k) for k in args.targets]
        extra = ((values[-1] - values[0]) / (args.targets[-1] - args.targets[0])
                 if len(values) > 1 and args.targets[-1] != args.targets[0] else float("nan"))
        cells = " | ".join(f"{v:.0f}" for v in values)
        print(f"| {model} | {cells} | {extra:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
