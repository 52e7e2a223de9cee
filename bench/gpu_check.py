"""The prepared GPU check (issue 14): every CUDA path of loupe and its absolute figures, in one
command that writes one Markdown report. Run it through ``bench/gpu_check.sh`` (``make
gpu-check``), which installs missing packages from ``.gpu-bundle/wheels`` and points
``LOUPE_ASSETS`` at ``.gpu-bundle/assets`` (both made by ``make gpu-bundle``).

Steps, each with its own time budget, run as subprocesses while a sampler records the GPU
memory in use (``torch.cuda.mem_get_info`` every 50 ms, all processes):

1. ``tests``: ``pytest -m cuda tests`` (the CUDA-marked tests: every registry test on the
   GPU, autocast float16 / bfloat16 against float32 on the real MobileNetV2, memory per row
   against the chunk rule, masks, metrics and training steps); any skip counts as a failure.
2. ``speed``: ``bench/speed.py --device cuda`` for every method at batch 1 and 64.
3. ``maps``: ``loupe maps`` with Grad-CAM at the IRN protocol (scales 1.0 0.5 1.5 2.0, flip)
   with resnet50 and MobileNetV2 (random weights) on the synthetic set and on coco128
   (float32 and ``--amp``): images per second, projected to VOC and COCO train.
4. ``torchrun``: ``train``, ``maps``, ``masks``, ``evaluate`` and ``train-seg`` under
   ``torchrun --nproc_per_node 1`` (and 2 where two GPUs exist) with NCCL; the evaluation of
   the same maps on the CPU in one process must give the same numbers.

A failing step does not stop the others (one GPU session shows every failure); the exit
status is 1 when any step failed, and the last line names them. Only loupe's CLI
(``python -m loupe``), ``bench/speed.py`` and pytest's ``-m cuda`` are used, so the check
does not depend on the package's internal layout.

    bench/gpu_check.sh                       # on a machine with CUDA; report to $OUT
    python bench/gpu_check.py --out DIR      # the same without the installs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 460  # the whole check, under 8 minutes
PROJECTIONS = {"VOC 2012 train (1,464 images)": 1464,
               "COCO 2014 train (82,783 images)": 82783}
IRN = ["--scales", "1.0", "0.5", "1.5", "2.0", "--flip"]
NEEDED_ASSETS = ("weights/mobilenet_v2_imagenet1k_coral.pth", "weights/tf_same_padding.py",
                 "photos/cat_and_dog.png", "photos/parrot.jpg", "photos/owl.jpg",
                 "coco128-seg/images/train2017", "coco128-seg/labels/train2017")


class StepFailed(Exception):
    """A step's check did not hold; the message says which."""


@dataclass
class Step:
    name: str
    budget_s: float
    run: Callable[[Check, list[str]], None]  # appends its section's Markdown as it goes
    status: str = "not run"
    seconds: float = 0.0
    peak_mib: float | None = None
    lines: list[str] = field(default_factory=list)


class MemorySampler:
    """Device memory in use (all processes, all GPUs), sampled in a thread; each open window
    (they nest: a step, a command) reports its peak above the level in use when it opened."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.count = torch.cuda.device_count()
        self.interval_s = interval_s
        self.windows: list[dict[str, float]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def used(self) -> int:
        total = 0
        for i in range(self.count):
            free, size = torch.cuda.mem_get_info(i)
            total += size - free
        return total

    def _loop(self) -> None:
        while not self.stop.wait(self.interval_s):
            self._update(self.used())

    def _update(self, used: int) -> None:
        with self.lock:
            for box in self.windows:
                box["peak"] = max(box["peak"], used)

    @contextmanager
    def window(self) -> Iterator[dict[str, float]]:
        idle = self.used()
        box = {"idle": idle, "peak": idle}
        with self.lock:
            self.windows.append(box)
        try:
            yield box
        finally:
            self._update(self.used())
            with self.lock:  # by identity: two windows can hold equal numbers
                self.windows = [w for w in self.windows if w is not box]
            box["peak_mib"] = (box["peak"] - box["idle"]) / 2**20

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


class Check:
    """What the steps share: where things are, the environment, the log and the deadline."""

    def __init__(self, out: Path, work: Path, assets: Path, deadline: float) -> None:
        self.out, self.work, self.assets, self.deadline = out, work, assets, deadline
        self.log = (out / "gpu-check.log").open("w", encoding="utf-8")
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", LOUPE_ASSETS=str(assets))
        src = str(REPO / "src")
        if src not in self.env.get("PYTHONPATH", "").split(os.pathsep):
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (src, self.env.get("PYTHONPATH")) if p)
        self.sampler = MemorySampler()
        self.step_end = deadline

    def command(self, argv: list[str], *, env: dict[str, str] | None = None
                ) -> tuple[str, float, float]:
        """Run ``argv`` from the repository root; (output, wall seconds, peak MiB above idle).
        A non-zero exit or running past the step's budget raises StepFailed."""
        left = self.step_end - time.monotonic()
        if left < 5:
            raise StepFailed(f"out of time before: {' '.join(argv)}")
        self.log.write(f"\n$ {' '.join(argv)}\n")
        self.log.flush()
        start = time.monotonic()
        with self.sampler.window() as memory:
            # its own process group, so that torchrun's workers go too when it is stopped
            child = subprocess.Popen(argv, cwd=REPO, env=env or self.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            try:
                output, _ = child.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                output, _ = child.communicate()
                self.log.write(output + "[stopped: out of time]\n")
                raise StepFailed(f"ran past the step's budget: {' '.join(argv)}") from None
        seconds = time.monotonic() - start
        self.log.write(output + f"[exit {child.returncode}, {seconds:.1f} s]\n")
        self.log.flush()
        if child.returncode != 0:
            tail = " | ".join(output.strip().splitlines()[-3:])
            raise StepFailed(f"exit {child.returncode}: {' '.join(argv[:6])} ...: {tail}")
        return output, seconds, memory["peak_mib"]

    def loupe(self, *args: str) -> tuple[str, float, float]:
        return self.command([sys.executable, "-m", "loupe", *args])


# -- step 1: the CUDA-marked tests ------------------------------------------------------------

def step_tests(check: Check, lines: list[str]) -> None:
    junit, record = check.work / "junit.xml", check.work / "record.jsonl"
    env = dict(check.env, LOUPE_GPU_CHECK_RECORD=str(record))
    try:
        check.command([sys.executable, "-m", "pytest", "-m", "cuda", "tests", "-q", "-p",
                       "no:cacheprovider", f"--junitxml={junit}"], env=env)
    finally:
        counts = junit_counts(junit) if junit.is_file() else {}
        lines += [f"`pytest -m cuda tests`: {counts or 'no junit file'}", ""]
        lines += [f"- {f}" for f in junit_problems(junit)] + [""] if junit.is_file() else []
        lines += record_tables(record)
    if counts.get("tests", 0) == 0 or counts.get("skipped", 0):
        raise StepFailed(f"{counts.get('tests', 0)} tests ran, {counts.get('skipped', 0)} "
                         "skipped (a GPU run must not skip)")


def junit_counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def junit_problems(path: Path, most: int = 60) -> list[str]:
    """``FAILED|ERROR|SKIPPED test id: first line of the message`` of each such test case."""
    found = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            for problem in case.findall(kind):
                message = (problem.get("message") or problem.text or "").strip().splitlines()
                found.append(f"{kind.upper()} {case.get('classname')}::{case.get('name')}: "
                             f"{message[0][:200] if message else ''}")
    return found[:most] + ([f"... and {len(found) - most} more"] if len(found) > most else [])


def record_tables(path: Path) -> list[str]:
    """Markdown tables of what tests/test_cuda.py measured."""
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() \
        else []
    lines = ["Autocast against float32 (minimum over maps; bound in brackets):", "",
             "| method | dtype | correlation | mask agreement |", "|---|---|---|---|"]
    for e in (e for e in entries if e["check"] == "autocast"):
        lines.append(f"| {e['method']} | {e['dtype']} | {e['correlation']:.6f} "
                     f"(>= {e['bound'][0]}) | {100 * e['agreement']:.2f}% "
                     f"(>= {100 * e['bound'][1]:.1f}%) |")
    lines += ["", "Other measurements:", ""]
    lines += [f"- {json.dumps(e)}" for e in entries if e["check"] != "autocast"]
    return lines + [""]


# -- step 2: bench/speed.py -------------------------------------------------------------------

SPEED = ["--device", "cuda", "--batch-sizes", "1", "64", "--chunk", "64", "--slow-batch", "8",
         "--strict"]


def step_speed(check: Check, lines: list[str]) -> None:
    table = check.work / "speed.md"
    lines += [f"`python bench/speed.py {' '.join(SPEED)}`", ""]
    try:
        check.command([sys.executable, "bench/speed.py", *SPEED, "--out", str(table)])
    finally:
        text = table.read_text() if table.is_file() else "(no table written)"
        lines.append(text.replace("# loupe speed", "### loupe speed"))


# -- step 3: loupe maps at the IRN protocol ---------------------------------------------------

def maps_runs(check: Check) -> list[tuple[str, list[str]]]:
    coco = ["--dataset", "yolo", "--root", str(check.assets / "coco128-seg"), "--split",
            "train2017", "--class-names", "coco", "--class-map", "coco_to_imagenet"]
    synthetic = ["--dataset", "synthetic", "--label-offset", "0"]  # 400 images of 96 x 96
    runs = []
    for model in ("resnet50", "mobilenet_v2"):
        runs.append((f"{model}, synthetic (400, 96 px)", [*synthetic, "--model", model]))
        runs.append((f"{model}, coco128 (own size)", [*coco, "--model", model]))
    runs.append(("resnet50, coco128 (own size), --amp", [*coco, "--model", "resnet50", "--amp"]))
    return runs


def maps_rate(output: str, name: str) -> tuple[int, float]:
    """(maps written, images/s) from the log line of ``loupe maps``."""
    found = re.search(r"(\d+) map files written.*\(([\d.]+) images/s\)", output)
    if not found:
        raise StepFailed(f"no 'images/s' line in the output of loupe maps ({name})")
    return int(found.group(1)), float(found.group(2))


def step_maps(check: Check, lines: list[str]) -> None:
    lines += ["`loupe maps --method gradcam --weights random --scales 1.0 0.5 1.5 2.0 --flip "
             "--batch-size 8 --workers 4 --device cuda`; images/s is loupe's own count of "
             "the map loop (model loading excluded), wall the whole command.", "",
             "| run | images | images/s | wall s | peak MiB | "
             + " | ".join(PROJECTIONS) + " |", "|---" * (5 + len(PROJECTIONS)) + "|"]
    for i, (name, args) in enumerate(maps_runs(check)):
        output, seconds, peak = check.loupe(
            "maps", *args, "--weights", "random", "--method", "gradcam", *IRN,
            "--batch-size", "8", "--workers", "4", "--device", "cuda", "--no-progress",
            "--out", str(check.work / f"maps-{i}"))
        images, rate = maps_rate(output, name)
        rate = rate or images / seconds  # the log line rounds to 0.1 images/s
        projected = " | ".join(f"{n / rate / 60:.1f} min" for n in PROJECTIONS.values())
        lines.append(f"| {name} | {images} | {rate:.1f} | {seconds:.1f} | {peak:.0f} | "
                     f"{projected} |")
    lines += ["", "Projections divide the image count by the rate measured; VOC images "
              "(about 500 x 375) are smaller than coco128's (about 640 x 480)."]


# -- step 4: torchrun with NCCL ---------------------------------------------------------------

SYNTHETIC = ["--dataset", "synthetic", "--synthetic-train", "64", "--synthetic-val", "16",
             "--synthetic-size", "96", "--no-progress"]  # every command reads the same set
TRAIN = ["--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "16", "--no-resize",
         "--crop", "96", "--pretrained", "none"]


def torchrun_chain(check: Check, procs: int, lines: list[str]) -> Path:
    """train -> maps -> masks -> evaluate -> train-seg under torchrun, a table row each."""
    base = check.work / f"torchrun-{procs}"
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(procs), "-m", "loupe"]
    commands = [
        ("train", ["train", *SYNTHETIC, *TRAIN, "--backbone", "resnet18", "--device", "cuda",
                   "--out", str(base / "classifier")]),
        ("maps", ["maps", *SYNTHETIC, "--model", str(base / "classifier"), *IRN, "--device",
                  "cuda", "--amp", "--out", str(base / "maps")]),
        ("masks", ["masks", "--maps", str(base / "maps"), "--device", "cuda", "--no-progress",
                   "--out", str(base / "masks")]),
        ("evaluate", ["evaluate", *SYNTHETIC, "--maps", str(base / "maps"), "--bootstrap", "200",
                      "--overlays", "0", "--device", "cuda", "--out", str(base / "evaluate")]),
        ("train-seg", ["train-seg", *SYNTHETIC, *TRAIN, "--masks", str(base / "masks"),
                       "--backbone", "mobilenet_v3_large", "--device", "cuda",
                       "--out", str(base / "segmenter")]),
    ]
    for name, argv in commands:
        _, seconds, peak = check.command([*run, *argv])
        lines.append(f"| {procs} | {name} | {seconds:.1f} | {peak:.0f} |")
    return base


def step_torchrun(check: Check, lines: list[str]) -> None:
    lines += ["With one process loupe creates no process group (WORLD_SIZE=1): NCCL itself "
              "runs only with 2 processes, which need 2 GPUs (NCCL refuses two ranks on one "
              "device).", "", "| processes | command | wall s | peak MiB |", "|---|---|---|---|"]
    counts = [1, 2] if torch.cuda.device_count() >= 2 else [1]
    folders = {procs: torchrun_chain(check, procs, lines) for procs in counts}
    one = folders[1]
    check.loupe("evaluate", *SYNTHETIC, "--maps", str(one / "maps"), "--bootstrap", "200",
                "--overlays", "0", "--device", "cpu", "--out", str(check.work / "eval-cpu"))
    same_results(one / "evaluate", check.work / "eval-cpu", "GPU (torchrun 1) and CPU")
    lines.append("")
    lines.append("- evaluate of the torchrun-1 maps: the same results.json on the CPU "
                 "(one process) as on the GPU under torchrun")
    if 2 in folders:
        check.loupe("evaluate", *SYNTHETIC, "--maps", str(folders[2] / "maps"), "--bootstrap",
                    "200", "--overlays", "0", "--device", "cpu",
                    "--out", str(check.work / "eval-cpu-2"))
        same_results(folders[2] / "evaluate", check.work / "eval-cpu-2", "torchrun 2 and CPU")
        lines.append("- the same for the maps of 2 processes, evaluated by 2 processes "
                     "(NCCL) and by one CPU process")
    else:
        lines.append(f"- one GPU ({torch.cuda.device_count()} visible): --nproc_per_node 2 "
                     "not run")


def same_results(a: Path, b: Path, what: str) -> None:
    first, second = (json.loads((p / "results.json").read_text()) for p in (a, b))
    for r in (first, second):
        for method in r.get("methods", {}).values():
            method.pop("folder", None)
    if first != second:
        raise StepFailed(f"evaluate results differ between {what} ({a} vs {b})")


# -- the report -------------------------------------------------------------------------------

def machine() -> list[str]:
    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    gpus = ", ".join(f"{p.name} ({p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} "
                     f"SMs, compute {p.major}.{p.minor})" for p in props)
    driver = quiet(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    try:
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception as error:  # a build without NCCL: say so in the report
        nccl = f"unavailable ({type(error).__name__})"
    commit = quiet(["git", "rev-parse", "--short", "HEAD"])
    return [f"- GPU: {gpus}", f"- driver {driver.splitlines()[0] if driver else 'unknown'}; "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()}, NCCL {nccl}",
            f"- Python {platform.python_version()}, {os.cpu_count()} CPUs, loupe commit "
            f"{commit or 'unknown'}"]


def quiet(argv: list[str]) -> str:
    """A helper command's output, or "" when it is missing or fails."""
    try:
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def report(steps: list[Step], total_s: float) -> str:
    lines = ["# loupe GPU check", "", *machine(), f"- total {total_s:.0f} s (budget {BUDGET_S} s)",
             "", "| step | status | seconds | peak GPU MiB above idle |", "|---|---|---|---|"]
    for s in steps:
        peak = "—" if s.peak_mib is None else f"{s.peak_mib:.0f}"
        lines.append(f"| {s.name} | {s.status} | {s.seconds:.0f} | {peak} |")
    for s in steps:
        lines += ["", f"## {s.name}", "", *s.lines]
    return "\n".join(lines) + "\n"


# seconds per step on one GPU; torchrun gets TORCHRUN_EXTRA_S more where 2 processes run
STEPS = [("tests", 140, step_tests), ("speed", 130, step_speed), ("maps", 100, step_maps),
         ("torchrun", 90, step_torchrun)]
TORCHRUN_EXTRA_S = 80


def run_steps(check: Check, steps: list[Step]) -> None:
    for step in steps:
        start = time.monotonic()
        check.step_end = min(check.deadline, start + step.budget_s)
        print(f"gpu-check: step {step.name} ...", flush=True)
        with check.sampler.window() as memory:
            try:
                step.run(check, step.lines)
                step.status = "ok"
            except StepFailed as error:
                step.status = f"FAILED: {error}"
            except Exception as error:  # a bug in the check is a failure too, not a skip
                step.status = f"FAILED: {type(error).__name__}: {error}"
        step.seconds, step.peak_mib = time.monotonic() - start, memory["peak_mib"]
        print(f"gpu-check: step {step.name}: {step.status} ({step.seconds:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or
                                                    REPO / "runs" / "gpu-check"))
    p.add_argument("--steps", nargs="+", choices=[s[0] for s in STEPS])
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device visible to this Python; nothing run")
        return 0
    assets = Path(os.environ.get("LOUPE_ASSETS") or REPO / ".gpu-bundle" / "assets")
    missing = [n for n in NEEDED_ASSETS if not (assets / n).exists()]
    if missing:
        print(f"gpu-check: step assets FAILED: {assets} lacks {', '.join(missing)} "
              "(make gpu-bundle)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    extra = TORCHRUN_EXTRA_S if torch.cuda.device_count() >= 2 else 0
    steps = [Step(n, b + (extra if n == "torchrun" else 0), f) for n, b, f in STEPS
             if args.steps is None or n in args.steps]
    with tempfile.TemporaryDirectory(prefix="loupe-gpu-check-") as work:
        check = Check(args.out, Path(work), assets, start + BUDGET_S + extra)
        try:
            run_steps(check, steps)
        finally:
            check.sampler.close()
            check.log.close()
    text = report(steps, time.monotonic() - start)
    (args.out / "gpu-check.md").write_text(text, encoding="utf-8")
    failed = [s.name for s in steps if s.status != "ok"]
    print(f"gpu-check: report in {args.out / 'gpu-check.md'}")
    if failed:
        print(f"gpu-check: FAILED steps: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("gpu-check: all steps ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
