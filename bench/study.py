"""The shuffle-saliency study (docs/shuffle-saliency.md) and the end-to-end coco128 run
(docs/results-coco128.md).

    nice -n 15 python bench/study.py --work /work/runs-study/study

Stages, in order (each resumable: finished map files, trained models and cached statistics
are kept; ``--stages`` runs some of them):

prepare   derived folder data sets (bench/study_data.py): coco128 through the COCO ->
          ImageNet mapping; with ``--voc`` also the three VOC samples (not in the study's
          run: maps of every variant for them would cost an estimated 80 CPU-seconds)
train     the synthetic set's small GAP classifier (``loupe train``)
maps      every variant of bench/study_variants.py on every data set (``loupe maps``)
evaluate  per-image threshold sweeps of every variant, raw and Gaussian-blurred, summaries
          and paired bootstrap differences (bench/study_eval.py) -> results.json, tables.md
cli       part B on coco128: ``loupe evaluate`` of every registered method, ``loupe masks``
          at each method's best threshold, ``loupe evaluate --masks``, ``loupe report``
figures   mIoU-threshold plots into docs/figures

Every ``loupe`` command runs in this process (``loupe.cli.main``) and is appended to
``<work>/commands.sh`` as the shell line that does the same; CPU seconds (user + system of
this process) per step go to ``<work>/timings.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_data import prepare_coco, prepare_voc_samples  # noqa: E402
from study_report import write_figures, write_tables  # noqa: E402
from study_variants import Variant, real_variants, synthetic_variants  # noqa: E402

from loupe.cli import main as loupe_main  # noqa: E402
from loupe.data.spec import DatasetSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("study")


@dataclass
class StudySet:
    """One data set of the study: how ``loupe`` commands name it, its variants, and how
    many images the ``subset`` variants cover."""

    name: str
    data_args: list[str]
    model_args: list[str]
    spec: DatasetSpec
    variants: list[Variant]
    subset: int
    limit: int = 0

    def maps_folder(self, work: Path, variant: Variant) -> Path:
        return work / self.name / "maps" / variant.name

    def images(self, variant: Variant | str) -> int:
        """How many images (first in id order) a variant covers; 0 = all."""
        kind = variant if isinstance(variant, str) else variant.images
        n = self.subset if kind == "subset" else self.limit
        return min(n, self.limit) if self.limit and n else n

    def limit_args(self, variant: Variant | str) -> list[str]:
        n = self.images(variant)
        return ["--limit", str(n)] if n else []


def real_model_args(assets: Path, class_map: Path) -> list[str]:
    weights = assets / "weights"
    return ["--model", "mobilenet_v2", "--weights",
            str(weights / "mobilenet_v2_imagenet1k_coral.pth"), "--scale", "x*2-1",
            "--patch", f"{weights / 'tf_same_padding.py'}:tf_same_padding",
            "--class-map", str(class_map), "--size", "224"]


def study_sets(args: argparse.Namespace) -> list[StudySet]:
    work, assets = args.work, args.assets
    coco, voc = work / "data" / "coco128-mapped", work / "data" / "voc-samples"
    s = args.synthetic
    synthetic_args = ["--dataset", "synthetic", "--split", "val", "--synthetic-train",
                      str(s[0]), "--synthetic-val", str(s[1]), "--synthetic-size", str(s[2]),
                      "--synthetic-seed", "0"]
    sets = [
        StudySet("coco", ["--dataset", "folder", "--root", str(coco)],
                 real_model_args(assets, coco / "class_map.json"),
                 DatasetSpec("folder", str(coco), limit=args.limit), real_variants(), args.subset,
                 args.limit),
        StudySet("synthetic", synthetic_args, ["--model", str(work / "synthetic" / "classifier")],
                 DatasetSpec("synthetic", split="val", synthetic_train=s[0], synthetic_val=s[1],
                             synthetic_size=s[2], synthetic_seed=0),
                 synthetic_variants(), s[1]),
    ]
    if args.voc:
        sets.append(StudySet("voc", ["--dataset", "folder", "--root", str(voc)],
                             real_model_args(assets, voc / "class_map.json"),
                             DatasetSpec("folder", str(voc)), real_variants(), 3))
    return [x for x in sets if x.name in args.sets]


class Runner:
    """Runs ``loupe`` commands in this process; logs them and their CPU seconds."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.timings_path = work / "timings.json"
        self.timings = (json.loads(self.timings_path.read_text())
                        if self.timings_path.is_file() else {})

    def loupe(self, key: str, argv: list[str]) -> None:
        line = "loupe " + " ".join(shlex.quote(a) for a in argv)
        logger.info("$ %s", line)
        with open(self.work / "commands.sh", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        self.timed(key, lambda: _check_status(loupe_main(argv), line))

    def timed(self, key: str, step) -> object:
        """Run ``step()``; its CPU and wall seconds are added to ``key`` also when it fails
        or the process is terminated (SIGTERM raises SystemExit, see :func:`main`)."""
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return step()
        finally:
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            old = self.timings.get(key, {"cpu_s": 0.0, "wall_s": 0.0})
            self.timings[key] = {"cpu_s": round(old["cpu_s"] + cpu, 1),
                                 "wall_s": round(old["wall_s"] + wall, 1)}
            self.timings_path.write_text(json.dumps(self.timings, indent=1) + "\n")
            logger.info("%s: %.1f s CPU, %.1f s wall", key, cpu, wall)


def _check_status(status: int, line: str) -> None:
    if status:
        raise RuntimeError(f"exit status {status}: {line}")


def stage_prepare(args: argparse.Namespace, runner: Runner) -> None:
    data = args.work / "data"
    info = runner.timed("prepare/coco", lambda: prepare_coco(args.assets,
                                                             data / "coco128-mapped"))
    logger.info("coco128 mapped: %s", info)
    if args.voc:
        runner.timed("prepare/voc", lambda: prepare_voc_samples(args.assets,
                                                                data / "voc-samples"))


def stage_train(args: argparse.Namespace, runner: Runner) -> None:
    out = args.work / "synthetic" / "classifier"
    if (out / "model.pt").is_file():
        logger.info("synthetic classifier exists: %s", out)
        return
    n_train, n_val, size = args.synthetic
    runner.loupe("train/synthetic", [
        "train", "--dataset", "synthetic", "--synthetic-train", str(n_train),
        "--synthetic-val", str(n_val), "--synthetic-size", str(size), "--backbone", "small",
        "--pretrained", "none", "--epochs", str(args.epochs), "--batch-size", "32", "--lr",
        "0.1", "--head-lr-mult", "1", "--resize-long", str(round(size * 0.875)),
        str(round(size * 1.125)), "--crop", str(size), "--jitter", "0.2", "0.2", "0.2", "0",
        "--seed", "0", "--device", "cpu", "--out", str(out), "--no-progress",
    ])


def stage_maps(args: argparse.Namespace, runner: Runner, sets: list[StudySet]) -> None:
    for study_set in sets:
        for variant in study_set.variants:
            if args.only and variant.name not in args.only:
                continue
            options = ["--option", *variant.options] if variant.options else []
            layer = ["--target-layer", variant.target_layer] if variant.target_layer else []
            runner.loupe(f"maps/{study_set.name}/{variant.name}", [
                "maps", *study_set.data_args, *study_set.limit_args(variant),
                *study_set.model_args, "--method", variant.method, *options, *layer,
                "--batch-size", "8", "--device", "cpu", "--no-progress",
                "--out", str(study_set.maps_folder(args.work, variant)),
            ])


def stage_cli(args: argparse.Namespace, runner: Runner, study_set: StudySet) -> None:
    """Part B: the registered methods through ``loupe evaluate / masks / report``."""
    from loupe.registry import list_methods

    work = args.work / study_set.name / "cli"
    methods = list_methods()
    by_name = {v.name: v for v in study_set.variants}
    full = [m for m in methods if by_name[m].images == "all"]
    folders = [str(study_set.maps_folder(args.work, by_name[m])) for m in methods]
    data = {run: [*study_set.data_args, *study_set.limit_args(run)] for run in ("all", "subset")}
    runner.loupe("cli/evaluate-all", [
        "evaluate", "--maps", *[f for m, f in zip(methods, folders, strict=True) if m in full],
        "--names", *full, *data["all"], "--out", str(work / "evaluate-all"), "--device", "cpu",
        "--no-progress"])
    runner.loupe("cli/evaluate-subset", [
        "evaluate", "--maps", *folders, "--names", *methods, *data["subset"],
        "--out", str(work / "evaluate-subset"), "--device", "cpu", "--no-progress"])
    results = {
        "all": json.loads((work / "evaluate-all" / "results.json").read_text()),
        "subset": json.loads((work / "evaluate-subset" / "results.json").read_text()),
    }
    masks: dict[str, list[tuple[str, str]]] = {"all": [], "subset": []}
    for method, folder in zip(methods, folders, strict=True):
        run = "all" if method in full else "subset"
        threshold = results[run]["methods"][method]["threshold"]
        out = work / "masks" / method
        runner.loupe(f"cli/masks/{method}", [
            "masks", "--maps", folder, "--out", str(out), "--threshold", f"{threshold:g}",
            "--device", "cpu", "--no-progress"])
        masks[run].append((method, str(out)))
    for run, entries in masks.items():
        runner.loupe(f"cli/evaluate-masks-{run}", [
            "evaluate", "--masks", *[f for _, f in entries], "--names", *[m for m, _ in entries],
            *data[run], "--bootstrap", "0", "--overlays", "0",
            "--out", str(work / f"evaluate-masks-{run}"), "--device", "cpu", "--no-progress"])
    check_masks(work, masks)
    runner.loupe("cli/report", [
        "report", str(work / "evaluate-all"), str(work / "evaluate-subset"),
        str(work / "evaluate-masks-all"), "--names", "all images",
        f"first {study_set.subset} images", "masks at each best threshold",
        "--title", "loupe on coco128 (MobileNetV2, COCO -> ImageNet)",
        "--out", str(work / "report.html")])


def check_masks(work: Path, masks: dict[str, list[tuple[str, str]]]) -> None:
    """The mIoU of each method's masks (``loupe masks`` + ``loupe evaluate --masks``) must
    equal its sweep's mIoU at the same threshold (``loupe evaluate --maps``): two code paths,
    one number. Writes ``checks.json``; raises on a mismatch."""
    checks = {}
    for run in masks:
        swept = json.loads((work / f"evaluate-{run}" / "results.json").read_text())["methods"]
        masked = json.loads((work / f"evaluate-masks-{run}" / "results.json").read_text())
        for method, _ in masks[run]:
            a, b = swept[method]["miou"], masked["methods"][method]["miou"]
            checks[method] = {"images": run, "sweep_miou": a, "masks_miou": b}
            if abs(a - b) > 1e-9:
                raise AssertionError(f"{method}: sweep mIoU {a} but masks mIoU {b}")
    (work / "checks.json").write_text(json.dumps(checks, indent=1) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", type=Path, default=REPO.parent / "shared" / "assets")
    p.add_argument("--work", type=Path, default=Path("/work/runs-study/study"),
                   help="outputs (maps, masks, results); never inside the repository")
    p.add_argument("--docs", type=Path, default=REPO / "docs",
                   help="where docs/figures/*.png go")
    p.add_argument("--stages", nargs="+", default=["prepare", "train", "maps", "evaluate",
                                                   "cli", "figures"])
    p.add_argument("--sets", nargs="+", default=["coco", "synthetic", "voc"])
    p.add_argument("--only", nargs="+", help="only these variants (maps stage)")
    p.add_argument("--limit", type=int, default=0,
                   help="only the first N coco128/VOC images (0 = all; for trials)")
    p.add_argument("--subset", type=int, default=24,
                   help="images (first in id order) of the costly coco128 variants")
    p.add_argument("--synthetic", type=int, nargs=3, default=[640, 160, 64],
                   metavar=("TRAIN", "VAL", "SIZE"), help="synthetic split sizes and side")
    p.add_argument("--epochs", type=int, default=16, help="synthetic classifier epochs")
    p.add_argument("--voc", action="store_true",
                   help="also the three VOC samples (about 80 s of CPU; off in the study's run)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--common-threshold", type=float, default=0.15)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def _keep_freed_memory() -> None:
    """Ask glibc not to return freed memory to the system at once: the batched backward
    passes allocate and free the same large buffers over and over, and handing them back
    each time made system CPU time exceed user time in trials."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD
    libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD (glibc's maximum)


def start_runner(args: argparse.Namespace) -> Runner:
    """What a study script does first: logging, ``args.threads`` torch threads, exit on
    SIGTERM, glibc keeping freed memory, ``args.work`` (outside the repository) created, and
    the :class:`Runner` on it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    _keep_freed_memory()
    if REPO in args.work.resolve().parents:
        raise SystemExit(f"--work {args.work} is inside the repository; choose a folder outside")
    args.work.mkdir(parents=True, exist_ok=True)
    return Runner(args.work)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = start_runner(args)
    sets = study_sets(args)
    if "prepare" in args.stages:
        stage_prepare(args, runner)
    if "train" in args.stages and any(s.name == "synthetic" for s in sets):
        stage_train(args, runner)
    if "maps" in args.stages:
        stage_maps(args, runner, sets)
    if "evaluate" in args.stages:
        for study_set in sets:
            runner.timed(f"evaluate/{study_set.name}",
                         lambda s=study_set: write_tables(args, s))
    if "cli" in args.stages and any(s.name == "coco" for s in sets):
        stage_cli(args, runner, next(s for s in sets if s.name == "coco"))
    if "figures" in args.stages:
        write_figures(args, sets)
    total = sum(v["cpu_s"] for v in runner.timings.values())
    logger.info("total CPU so far: %.1f s (%.1f min)", total, total / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
