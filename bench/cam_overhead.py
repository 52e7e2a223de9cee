"""Where CAM's time beyond the forward goes: loupe's steps timed in place, against torchcam.

``loupe.explain(method="cam")`` is the model's forward plus per-call work (the method spec,
target checks, the hook context, the head check, the maps, upsampling). This script times
(1) the bare forward (under ``torch.no_grad``, and under ``torch.inference_mode`` as loupe's
CAM runs it), loupe's CAM (``explain``, and a ``loupe.explainer`` block made before
the clock starts, as torchcam's extractor is) and torchcam's CAM interleaved call by call
(bench/paired.py, as bench/speed.py: torchcam's extractor is made before the clock starts
and its hooks are on the model only around its own calls), and prints each one's median
excess over the bare forward (wall clock), and per round with a 95% interval loupe's CAM less
torchcam's and the forward under no_grad less under inference mode; (2) the same steps as
``explain`` runs them, each with its own timer, so each is timed after a real forward has
evicted the caches (in a tight loop they cost several times less). One thread, resnet18 with
random weights, layer4.

    python bench/cam_overhead.py --size 64 --batch 1 --calls 400
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

import loupe
from loupe.api import _check_images, _layer_of
from loupe.context import MapContext
from loupe.hooks import hooked
from loupe.layers import default_reshape
from loupe.method_specs import resolve_method
from loupe.methods.cam import checked_class_activation_maps
from loupe.methods.heads import head_search
from loupe.models import random_model
from loupe.registry import get_method
from loupe.targets import resolve_targets

sys.path.insert(0, os.path.dirname(__file__))
from paired import interleaved, median_interval  # noqa: E402


def excess_over_forward(model, x, classes, calls: int) -> dict[str, float]:
    """Median wall ms per call of the bare forward, loupe and torchcam, and of each one's
    excess over the forward of the same round (bench/paired.py: the three alternated, the
    order rotated, torchcam's hooks on the model only around its own calls)."""
    import torchcam.methods

    size = x.shape[-1]

    @contextlib.contextmanager
    def plain() -> Iterator[Callable[[], object]]:
        with torch.no_grad():
            yield lambda: model(x)

    @contextlib.contextmanager
    def inference() -> Iterator[Callable[[], object]]:
        with torch.inference_mode():  # how loupe's CAM runs it (MapContext.inference_output)
            yield lambda: model(x)

    @contextlib.contextmanager
    def ours() -> Iterator[Callable[[], object]]:
        yield lambda: loupe.explain(model, x, classes, method="cam", target_layer="layer4")

    @contextlib.contextmanager
    def block() -> Iterator[Callable[[], object]]:
        with loupe.explainer(model, "cam", target_layer="layer4") as explain_batch:
            yield lambda: explain_batch(x, classes)

    @contextlib.contextmanager
    def theirs() -> Iterator[Callable[[], object]]:
        with torchcam.methods.CAM(model, target_layer="layer4", fc_layer="fc",
                                  input_shape=(3, size, size)) as extractor:

            def call() -> object:
                with torch.no_grad():
                    scores = model(x)
                cams = extractor(class_idx=classes.tolist(), scores=scores)
                return F.interpolate(cams[0][:, None], size=(size, size), mode="bilinear",
                                     align_corners=False)

            yield call

    samples = interleaved({"forward": plain, "forward, inference mode": inference,
                           "loupe": ours, "loupe explainer": block, "torchcam": theirs},
                          calls, True, torch.device("cpu"),
                          lambda who, error: print(f"{who}: {error}"))
    times = {name: [wall for wall, _ in s] for name, s in samples.items()}
    result = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    for name in ("loupe", "loupe explainer", "torchcam"):
        result[f"{name} - forward"] = 1e3 * statistics.median(
            a - b for a, b in zip(times[name], times["forward"], strict=True))
    pairs = [("loupe", "torchcam"), ("loupe explainer", "torchcam"),
             ("forward", "forward, inference mode")]
    for name, other in pairs:  # per round, with a 95% interval of the median
        more = [a - b for a, b in zip(times[name], times[other], strict=True)]
        low, high = median_interval(more)
        result[f"{name} - {other}"] = 1e3 * statistics.median(more)
        result[f"{name} - {other}, 95% low"] = 1e3 * low
        result[f"{name} - {other}, 95% high"] = 1e3 * high
    return result


def steps_in_place(model, x, classes, calls: int) -> dict[str, float]:
    """Median us of each step of loupe's CAM call, timed as ``explain`` runs them."""
    acc: dict[str, list[float]] = defaultdict(list)

    def one_call() -> None:
        marks = [time.perf_counter()]

        def mark(name: str) -> None:
            marks.append(time.perf_counter())
            acc[name].append(marks[-1] - marks[-2])

        _check_images(x)
        name, options = resolve_method("cam", {}, "the keyword arguments")
        spec = get_method(name)
        layer = _layer_of(spec, model, x, "layer4", options)
        mark("method and layer")
        targets = resolve_targets(classes, x.shape[0], x.device)
        mark("targets")
        with hooked(model, [layer], freeze=False) as captured, torch.no_grad():
            mark("hook context: enter")
            ctx = MapContext(model, x.detach(), targets, layer, captured,
                             default_reshape(model), None)
            logits = ctx.inference_output()
            mark("forward")
            bound = ctx.targets.bind(logits)
            activation = ctx.activation()
            mark("bind targets, activation")
            search = head_search(model, activation, logits, layer=layer)
            mark("head: find the linear layer")
            maps = checked_class_activation_maps(search, activation, logits, bound.classes,
                                                 bound.padded)
            mark("maps, checked against the logits")
        mark("hook context: exit")
        F.interpolate(maps.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        mark("upsampling")

    for _ in range(50):
        one_call()
    acc.clear()
    for _ in range(calls):
        one_call()
    return {name: 1e6 * statistics.median(t) for name, t in acc.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = random_model("resnet18", seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    classes = torch.randint(0, 1000, (args.batch,), generator=g)
    print(f"resnet18 (random), {args.size}x{args.size}, batch {args.batch}, one thread, "
          f"torch {torch.__version__}")
    for name, ms in excess_over_forward(model, x, classes, args.calls).items():
        print(f"{name:48s} {ms:8.3f} ms")
    steps = steps_in_place(model, x, classes, args.calls)
    for name, us in steps.items():
        print(f"{name:48s} {us:8.0f} us")
    rest = sum(us for name, us in steps.items() if name != "forward")
    print(f"{'all but the forward':48s} {rest:8.0f} us")


if __name__ == "__main__":
    main()
