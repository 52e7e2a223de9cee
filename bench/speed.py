"""Images per second of loupe's methods against pytorch-grad-cam, captum and torchcam.

One run, one model (torchvision ``resnet50``, random weights, eval), one seeded input at
224x224 and one seeded target class per image, shared by every implementation; the same target
layer (``layer4``) for every layer method; every implementation returns maps at the input's
resolution (peers that stop at the layer's resolution are upsampled bilinearly, as
``loupe.explain`` does). Each implementation is warmed up with one call before it is timed,
then timed over ``--repeats`` rounds (median); a round calls loupe and every peer once each,
in an order that rotates from round to round, with only the called implementation's hooks on
the model (bench/paired.py), so the per-round ratio of CPU times gives an interval. Slow
methods (Score-CAM, SmoothGrad-32, IG-32, shuffle-32) get ``--slow-repeats`` rounds (default
one) and no warm-up, on at most ``--slow-batch`` images (the batch column shows the batch
actually timed), so the whole script ends in reasonable time.

loupe runs as a ``loupe.explainer`` block, entered before the clock starts and left after it
stops, as each peer's extractor is (its hooks, modes and CAM's head are set up on entry);
``--one-call`` times ``loupe.explain`` instead, which sets all that up inside every call.
Peers run as their documentation shows (batched input with one target per image; models with
trainable parameters, so pytorch-grad-cam's ``loss.backward()`` also computes weight
gradients); ``--frozen-params`` instead freezes the parameters for everyone and gives the
peers an input that requires grad. Chunked methods get the same number of rows per forward
(``--chunk``): loupe ``chunk_size``, captum ``internal_batch_size`` /
``nt_samples_batch_size``, grad-cam ``ScoreCAM.batch_size``, torchcam ``batch_size``.

    python bench/speed.py --quick                 # smoke run: resnet18 at 64x64
    python bench/speed.py --device cuda --out bench/speed.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

import loupe
from loupe.io import atomic_path
from loupe.models import random_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cases_guided  # noqa: E402
import cases_methods  # noqa: E402
import cases_perturb  # noqa: E402
import cases_shuffle  # noqa: E402
from paired import Entry, interleaved, one_call, paired_ratio  # noqa: E402
from speed_peers import (  # noqa: E402
    PEERS,
    Case,
    PeerFactory,
    Setup,
    captum,
    chunked,
    grad_cam,
    torchcam,
)

CASES = [
    Case("cam", lambda s: {}, {"torchcam": torchcam("CAM")}),
    Case("gradcam", lambda s: {}, {"grad-cam": grad_cam("GradCAM"),
                                   "captum": captum("LayerGradCam"),
                                   "torchcam": torchcam("GradCAM")}),
    Case("gradcam++", lambda s: {}, {"grad-cam": grad_cam("GradCAMPlusPlus"),
                                     "torchcam": torchcam("GradCAMpp")}),
    Case("xgradcam", lambda s: {}, {"grad-cam": grad_cam("XGradCAM"),
                                    "torchcam": torchcam("XGradCAM")}),
    Case("layercam", lambda s: {}, {"grad-cam": grad_cam("LayerCAM"),
                                    "torchcam": torchcam("LayerCAM")}),
    Case("hirescam", lambda s: {}, {"grad-cam": grad_cam("HiResCAM")}),
    Case("saliency", lambda s: {}, {"captum": captum("Saliency")}),
    Case("gradxinput", lambda s: {}, {"captum": captum("InputXGradient")}),
    Case("scorecam", chunked, {"grad-cam": grad_cam("ScoreCAM"),
                               "torchcam": torchcam("ScoreCAM")}, slow=True),
    Case("integrated-gradients", lambda s: {"steps": s.samples, **chunked(s)},
         {"captum": captum("IntegratedGradients")}, slow=True),
    Case("smoothgrad", lambda s: {"n_samples": s.samples, **chunked(s)},
         {"captum": captum("NoiseTunnel")}, slow=True),
    Case("shuffle", lambda s: {"n_shuffles": s.samples, "include_original": False,
                               **chunked(s)},
         {"captum": captum("NoiseTunnel")}, slow=True),
]
CASES += cases_guided.CASES  # guided-backprop, guided-gradcam
CASES += cases_perturb.CASES + cases_methods.CASES + cases_shuffle.CASES  # shuffle options last


# -- timing ----------------------------------------------------------------------------------

def seconds_per_call(fn: Callable[[], object], repeats: int, warmup: bool,
                     device: torch.device) -> tuple[float, float]:
    """Median wall time and median process CPU time (user + sys, all threads) of ``repeats``
    calls, after one untimed call when ``warmup``. The CPU time counts only this process, so
    with one thread it holds on a loaded machine where wall time does not."""
    if warmup:
        fn()
    walls, cpus = zip(*(one_call(fn, device) for _ in range(repeats)), strict=True)
    return statistics.median(walls), statistics.median(cpus)


def model_rows(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, batches: list[int],
               repeats: int, device: torch.device) -> tuple[list[str], dict[int, float]]:
    """Markdown rows of forward (no grad) and forward + backward to the input (parameters
    frozen) img/s at each batch size, and the forward + backward img/s by batch size."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    rows, backward_rates = [], {}
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for b in batches:
            xb, cb = x[:b], classes[:b]

            def forward(xb: torch.Tensor = xb) -> object:
                with torch.no_grad():
                    return model(xb)

            def backward(xb: torch.Tensor = xb, cb: torch.Tensor = cb) -> object:
                inputs = xb.detach().requires_grad_(True)
                score = model(inputs).gather(1, cb[:, None]).sum()
                return torch.autograd.grad(score, inputs)[0]

            fwd = seconds_per_call(forward, repeats, True, device)[0]
            bwd = seconds_per_call(backward, repeats, True, device)[0]
            rows.append(f"| {b} | {rate(b / fwd)} | {rate(b / bwd)} |")
            backward_rates[b] = b / bwd
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return rows, backward_rates


def model_baseline(model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
                   args: argparse.Namespace, device: torch.device
                   ) -> tuple[list[str], dict[int, float]]:
    """:func:`model_rows` at every batch size timed (slow methods' too) and at the chunk
    size, after one warm-up forward at each."""
    batches = sorted({*args.batch_sizes, args.chunk,
                      *(min(b, args.slow_batch) for b in args.batch_sizes)})
    with torch.no_grad():
        for b in batches:
            model(torch.randn(b, 3, args.size, args.size, device=device))
    biggest, most = x.shape[0], max(batches)
    x_model = x if most <= biggest else x.repeat(-(-most // biggest), 1, 1, 1)
    classes_model = classes.repeat(-(-len(x_model) // biggest))
    return model_rows(model, x_model, classes_model, batches, args.repeats, device)


LOUPE_TIMED = {
    False: "`loupe.explainer` made before the clock starts, as the peers' extractors",
    True: "`loupe.explain`, whose every call sets up (hooks, modes, the method's checks)",
}


def rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def measure(case: Case, setup: Setup, x: torch.Tensor, classes: torch.Tensor, batch: int,
            args: argparse.Namespace, device: torch.device, notes: list[str],
            backward_rates: dict[int, float]) -> tuple[str, float | None]:
    """One Markdown row (loupe and each peer at ``batch`` images, loupe against the fastest
    peer and against the model's forward + input-gradient at that batch) and loupe's img/s."""
    slow = case.slow
    b = min(batch, args.slow_batch) if slow else batch
    repeats = args.slow_repeats if slow else args.repeats
    xb, cb = x[:b], classes[:b]
    spec = loupe.get_method(case.method)
    options = case.options(setup)
    layer = setup.layer if spec.uses_layer else None

    def loupe_call() -> object:
        return loupe.explain(setup.model, xb, cb, method=case.method, target_layer=layer,
                             **options)

    @contextlib.contextmanager
    def loupe_explainer() -> Iterator[Callable[[], object]]:
        with loupe.explainer(setup.model, case.method, target_layer=layer, **options) as run:
            yield lambda: run(xb, cb)

    entries: dict[str, Entry] = {
        "loupe": (lambda: contextlib.nullcontext(loupe_call)) if args.one_call else loupe_explainer}
    peer_input = xb.detach().requires_grad_(True) if args.frozen_params else xb
    for peer in PEERS:
        if peer in case.peers:
            entries[peer] = peer_entry(case.peers[peer], setup, peer_input, cb)
    failed: set[str] = set()

    def on_failure(who: str, error: Exception) -> None:
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            notes.append(f"{who} {case.label}: out of memory ({str(error).splitlines()[0]})")
        elif who == "loupe":
            raise error
        else:  # a peer that cannot run is reported, not fatal
            failed.add(who)
            notes.append(f"{who} {case.label} failed: {type(error).__name__}: {error}")

    samples = interleaved(entries, repeats, not slow, device, on_failure)
    return row_of(case, batch, b, samples, failed, backward_rates[b])


def peer_entry(factory: PeerFactory, setup: Setup, x: torch.Tensor, classes: torch.Tensor
               ) -> Entry:
    """An :data:`paired.Entry` that builds the peer's extractor (hooks and all) around each
    timed call of it on ``x``."""

    @contextlib.contextmanager
    def entry() -> Iterator[Callable[[], object]]:
        with factory(setup) as run:
            yield lambda: run(x, classes)

    return entry


def row_of(case: Case, batch: int, b: int, samples: dict[str, list[tuple[float, float]]],
           failed: set[str], backward_rate: float) -> tuple[str, float | None]:
    """The Markdown row of one case at ``b`` images from each implementation's (wall, CPU)
    seconds per call: img/s, loupe over the fastest peer by wall time, loupe over the model
    alone, the CPU milliseconds of loupe and of the peer with the least, and that peer's CPU
    time over loupe's per round (median and 95% interval); and loupe's img/s."""
    wall = {k: statistics.median(w for w, _ in v) for k, v in samples.items() if v}
    cpu = {k: statistics.median(c for _, c in v) for k, v in samples.items() if v}
    ips = {k: b / v for k, v in wall.items()}
    peers = [v for k, v in ips.items() if k != "loupe"]
    ratio = f"{ips['loupe'] / max(peers):.2f}×" if peers and "loupe" in ips else "—"
    own = f"{ips['loupe'] / backward_rate:.2f}×" if "loupe" in ips else "—"
    cpu_peer = min((k for k in cpu if k != "loupe"), key=cpu.get, default=None)
    paired = "—"
    if cpu_peer and "loupe" in cpu:
        paired = "{:.2f}× [{:.2f}, {:.2f}]".format(
            *paired_ratio(samples[cpu_peer], samples["loupe"]))
    cpu_cells = [rate(1e3 * cpu["loupe"]) if "loupe" in cpu else "—",
                 f"{rate(1e3 * cpu[cpu_peer])} ({cpu_peer})" if cpu_peer else "—", paired]
    shown = f"{b}" if b == batch else f"{b} (of {batch})"
    marker = "*" if case.slow else ""
    cells = ["failed" if k in failed else rate(ips.get(k)) for k in ("loupe", *PEERS)]
    row = (f"| {case.label}{marker} | {shown} | " + " | ".join(cells)
           + f" | {ratio} | {own} | " + " | ".join(cpu_cells) + " |")
    return row, ips.get("loupe")


# -- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [c.label for c in CASES]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", type=int, nargs="+")
    p.add_argument("--methods", nargs="+", choices=names, help="default: all")
    p.add_argument("--repeats", type=int, help="timed calls per fast method (default 5)")
    p.add_argument("--slow-repeats", type=int, default=1,
                   help="timed calls per slow method, median (default 1, no warm-up call)")
    p.add_argument("--quick", action="store_true", help="smoke run: resnet18 at 64x64")
    p.add_argument("--model", help="torchvision model (default resnet50; resnet18 with --quick)")
    p.add_argument("--size", type=int, help="input side (default 224; 64 with --quick)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument("--chunk", type=int, help="rows per forward of chunked methods "
                   "(default 16: see loupe._autograd.GRADIENT_CHUNK)")
    p.add_argument("--samples", type=int, default=32, help="T of SmoothGrad / IG / shuffle")
    p.add_argument("--slow-batch", type=int, help="most images timed for slow methods "
                   "(default: 16 on CUDA, 1 on CPU, 2 with --quick)")
    p.add_argument("--frozen-params", action="store_true",
                   help="freeze parameters for every implementation (see the module docstring)")
    p.add_argument("--one-call", action="store_true",
                   help="time loupe.explain, which sets up on every call, instead of a "
                        "loupe.explainer made before the clock starts, as the peers' extractors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the Markdown here")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when loupe could not be timed somewhere (out of memory)")
    args = p.parse_args(argv)
    args.model = args.model or ("resnet18" if args.quick else "resnet50")
    args.size = args.size or (64 if args.quick else 224)
    args.batch_sizes = args.batch_sizes or ([1, 4] if args.quick else [1, 16])
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.chunk = args.chunk or 16
    if args.slow_batch is None:
        args.slow_batch = 2 if args.quick else 16 if args.device.startswith("cuda") else 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    registered = set(loupe.list_methods())
    cases = [c for c in CASES if (args.methods is None or c.label in args.methods)
             and c.method in registered]
    skipped = [c.label for c in CASES if c.method not in registered
               and (args.methods is None or c.label in args.methods)]

    start_times, start_load, start_wall = os.times(), os.getloadavg(), time.perf_counter()
    model = random_model(args.model, seed=args.seed).to(device)
    if args.frozen_params:
        model.requires_grad_(False)
    setup = Setup(model, "layer4", args.size, args.chunk, args.samples)
    g = torch.Generator().manual_seed(args.seed)
    biggest = max(args.batch_sizes)
    x = torch.randn(biggest, 3, args.size, args.size, generator=g).to(device)
    classes = torch.randint(0, 1000, (biggest,), generator=g).to(device)

    forward_rows, backward_rates = model_baseline(model, x, classes, args, device)

    notes: list[str] = []
    rows, pass_rows, untimed = [], [], []
    for case in cases:
        for batch in args.batch_sizes:
            row, loupe_rate = measure(case, setup, x, classes, batch, args, device, notes,
                                      backward_rates)
            rows.append(row)
            if loupe_rate is None:
                untimed.append(f"{case.label} at batch {batch}")
            print(row, file=sys.stderr, flush=True)
            if case.method in SAMPLING and loupe_rate:
                pass_rows.append(sampling_row(case.label, row, loupe_rate * args.samples,
                                              backward_rates[args.chunk]))
    end = os.times()
    usage = (f"The whole run: {time.perf_counter() - start_wall:.0f} s wall, CPU user "
             f"{end.user - start_times.user:.0f} s, sys {end.system - start_times.system:.0f} s "
             f"(this process); load average (1, 5, 15 min) "
             f"{', '.join(f'{v:.2f}' for v in start_load)} at the start, "
             f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} at the end, on "
             f"{os.cpu_count()} CPUs.")
    text = report(args, device, forward_rows, rows, pass_rows, notes, skipped, usage)
    print(text)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    if args.strict and untimed:
        print(f"speed: loupe could not be timed: {', '.join(untimed)}", file=sys.stderr)
        return 1
    return 0


SAMPLING = ("smoothgrad", "integrated-gradients", "shuffle")  # T forward + backward passes


def sampling_row(method: str, row: str, passes: float, raw: float) -> str:
    """Markdown row: a sampling method's forward + backward passes per second against the
    model's own forward + input-gradient img/s at the chunk size (1.00 = no overhead)."""
    batch = row.split("|")[2].strip()
    return f"| {method} | {batch} | {rate(passes)} | {rate(raw)} | {passes / raw:.2f} |"


def _calls(n: int) -> str:
    return "one timed round" if n == 1 else f"{n} timed rounds (median)"


def report(args: argparse.Namespace, device: torch.device, forward_rows: list[str],
           rows: list[str], pass_rows: list[str], notes: list[str],
           skipped: list[str], usage: str = "") -> str:
    from importlib.metadata import version

    import captum
    import torchcam

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    lines = [
        f"# loupe speed: {args.model} at {args.size}x{args.size}, random weights",
        "",
        f"Device {device} ({name or platform.machine()}), {args.threads} CPU threads; torch "
        f"{torch.__version__}, loupe {loupe.__version__}, grad-cam {version('grad-cam')}, "
        f"captum {captum.__version__}, torchcam {torchcam.__version__}. Target layer layer4; "
        f"{args.repeats} interleaved rounds (median) after one warm-up call; chunk "
        f"{args.chunk} rows per forward; T = {args.samples}; parameters "
        f"{'frozen for everyone' if args.frozen_params else 'trainable (peers as documented)'}; "
        f"loupe timed as {LOUPE_TIMED[args.one_call]}.",
        "",
        "| method | batch | loupe img/s | grad-cam img/s | captum img/s | torchcam img/s | "
        "loupe / fastest peer | loupe / model fwd+bwd | loupe CPU ms/call | "
        "fastest peer CPU ms/call | fastest peer CPU / loupe CPU, per round [95%] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"\\* slow method: {_calls(args.slow_repeats)}, no warm-up call of its own, on at most "
        f"{args.slow_batch} images (the batch column shows how many). Score-CAM does one "
        "masked forward per channel of layer4 per image; IG, SmoothGrad and shuffle do T "
        "forwards and backwards per image. shuffle is compared with captum "
        f"NoiseTunnel(Saliency) with {args.samples} samples, and run with "
        "include_original=False, so both make the same number of passes. 'loupe / model "
        "fwd+bwd' is loupe's img/s over the model's own forward + input-gradient img/s at the "
        "batch timed (table below): 1.00 = a map costs one forward and backward. The CPU "
        "columns are the median user + sys milliseconds of this process per call (all its "
        "threads) of loupe and of the peer that used the least, and the median over rounds of "
        "that peer's CPU time over loupe's in the same round, with its 95% bootstrap interval "
        "(above 1: loupe faster; an interval that contains 1: no difference this run can "
        "show; with 3 rounds or fewer the interval is just the range). The CPU ratio holds "
        "where other processes load the machine, the wall-clock ratio does not.",
        "",
        *([usage, ""] if usage else []),
        "Model alone (parameters frozen, one target per image):",
        "",
        "| batch | forward img/s | forward + input-gradient backward img/s |",
        "|---|---|---|",
        *forward_rows,
    ]
    if pass_rows:
        lines += [
            "",
            f"Sampling methods against the model alone: loupe's forward + backward passes per "
            f"second (img/s × T) over the model's forward + input-gradient img/s at the chunk "
            f"size ({args.chunk} rows), the most a method built on those passes can reach:",
            "",
            "| method | batch | loupe passes/s | model fwd+bwd img/s | ratio |",
            "|---|---|---|---|---|",
            *pass_rows,
        ]
    if skipped:
        lines += ["", f"Not registered in loupe yet, so not timed: {', '.join(skipped)}."]
    if notes:
        lines += ["", "Notes:", *(f"- {n}" for n in notes)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
