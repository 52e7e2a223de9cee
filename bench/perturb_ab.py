"""Load-robust A/B timing of loupe against its peer, for rows of speed.py's CASES.

speed.py times wall clock; on a shared, overloaded CPU its slow rows (one call each) are
noise. This script alternates loupe and peer calls (after one untimed call of each) and
reports CPU time (``time.process_time``) per call and the median of the per-pair ratios with
its 95% bootstrap interval over the pairs (bench/paired.py: the peer's hooks are on the model
only around its own calls).

    python bench/perturb_ab.py SIZE BATCH REPEATS METHOD...   # resnet18, layer4, chunk 16
    python bench/perturb_ab.py 224 1 5 shuffle "shuffle accumulate=var"   # speed.py's labels
    THREADS=2 WALL=1 python bench/perturb_ab.py 64 2 5 occlusion   # wall clock, 2 threads
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import warnings

import torch

import loupe
from loupe.models import random_model

sys.path.insert(0, os.path.dirname(__file__))
import speed  # noqa: E402
from paired import interleaved, median_interval, round_ratios  # noqa: E402


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    size, batch, reps, names = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    model = random_model("resnet18", seed=0)
    setup = speed.Setup(model, "layer4", size, 16, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    classes = torch.randint(0, 1000, (batch,), generator=g)
    cases = {c.label: c for c in speed.CASES}
    clock = 0 if os.environ.get("WALL") else 1  # index of (wall, CPU) seconds
    for name in names:
        case = cases[name]
        spec = loupe.get_method(case.method)
        options = case.options(setup)
        layer = "layer4" if spec.uses_layer else None

        def ours(options=options, layer=layer, method=case.method) -> object:
            return loupe.explain(model, x, classes, method=method, target_layer=layer, **options)

        for peer, factory in case.peers.items():
            entries = {"loupe": lambda ours=ours: contextlib.nullcontext(ours),
                       peer: speed.peer_entry(factory, setup, x, classes)}
            samples = interleaved(entries, reps, True, torch.device("cpu"), fail)
            ratios = round_ratios(samples[peer], samples["loupe"], clock)
            low, high = median_interval(ratios)
            print(f"{name} vs {peer}, batch {batch}, {size}x{size}: loupe "
                  f"{statistics.median(o[clock] for o in samples['loupe']):.3f} s, peer "
                  f"{statistics.median(p[clock] for p in samples[peer]):.3f} s per call; peer / "
                  f"loupe {statistics.median(ratios):.2f} [{low:.2f}, {high:.2f}] "
                  f"({', '.join(f'{r:.2f}' for r in ratios)})", flush=True)


def fail(who: str, error: Exception) -> None:
    raise error


if __name__ == "__main__":
    main()
