"""Issue 10's dev screening of shuffle saliency's options (docs/shuffle-saliency.md, "Dev
results"): every variant and the reference methods on the DEV halves only.

    nice -n 10 python bench/shuffle_dev.py --work /work/runs-shuffle/dev --sets coco cats

Sets (the protocol's dev halves: the first half of the sorted ids, ``--limit`` because each
data set's order is its sorted id order, checked at run time):

coco    coco128 (YOLO folder) through the ImageNet MobileNetV2, 224x224, ``--class-map
        coco_to_imagenet``: the first 64 of 128 ids
cats    feral-cats (YOLO, ``--split valid``), same model and class map: the first 97 of 195
loop    the classifier of ``bench/coco128_loop.py`` (``--loop`` names its work folder),
        320x320, its train split: the first 50 of 101 ids

Stages (resumable: finished map files and cached statistics are kept):

maps      ``loupe maps`` of every variant of :func:`variants` (bench/shuffle_dev_variants.py)
crf       CAM + dense CRF at every threshold of the sweep (the masks ``loupe masks --crf``
          makes; bench/shuffle_dev_eval.py), as per-image statistics
evaluate  per-image threshold sweeps of every variant at every smoothing of the protocol,
          summaries, paired bootstraps against CAM and against the shuffle default ->
          ``<work>/<set>/results.json`` and ``tables.md``

Every ``loupe`` command runs in this process and is appended to ``<work>/commands.sh``; CPU
seconds per step go to ``<work>/timings.json`` (bench/study.py's ``Runner``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shuffle_dev_eval import DevSet, write_crf_stats, write_tables  # noqa: E402
from shuffle_dev_variants import Variant, variants  # noqa: E402
from shuffle_tee import SUMS_OPTIONS, write_tee_maps  # noqa: E402
from study import Runner, start_runner  # noqa: E402

from loupe.data.spec import DatasetSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("shuffle_dev")


def mobilenet_args(assets: Path, size: int = 224) -> list[str]:
    weights = assets / "weights"
    return ["--model", "mobilenet_v2", "--weights",
            str(weights / "mobilenet_v2_imagenet1k_coral.pth"), "--scale", "x*2-1",
            "--patch", f"{weights / 'tf_same_padding.py'}:tf_same_padding",
            "--class-map", "coco_to_imagenet", "--size", str(size)]


def dev_sets(args: argparse.Namespace) -> list[DevSet]:
    a = args.assets
    coco = ["--dataset", "yolo", "--root", str(a / "coco128-seg"), "--split", "train2017",
            "--class-names", "coco"]
    cats = ["--dataset", "yolo", "--root", str(a / "feral-cats"), "--split", "valid"]
    loop = ["--dataset", "folder", "--root", str(args.loop / "data"), "--split", "train"]
    sets = [
        DevSet("coco", coco, mobilenet_args(a), 64, 128,
               DatasetSpec("yolo", str(a / "coco128-seg"), "train2017", class_names="coco",
                           limit=64), "coco_to_imagenet", 224),
        DevSet("cats", cats, mobilenet_args(a), 97, 195,
               DatasetSpec("yolo", str(a / "feral-cats"), "valid", limit=97),
               "coco_to_imagenet", 224),
        DevSet("loop", loop, ["--model", str(args.loop / "classifier"), "--size", "320"], 50,
               101, DatasetSpec("folder", str(args.loop / "data"), "train", limit=50), None,
               320),
    ]
    return [s for s in sets if s.name in args.sets]


def chunk_option(variant: Variant, dev_set: DevSet) -> list[str]:
    """Rows per pass of the sampling methods (maps do not depend on it): 4 at 224 px, 2 at
    320 px (larger chunks spent their time faulting in freed buffers in trials)."""
    if not variant.sampling:
        return []
    return [f"chunk_size={4 if dev_set.size <= 224 else 2}"]


def stage_tee(args: argparse.Namespace, runner: Runner, dev_set: DevSet,
              chosen: list[Variant]) -> None:
    """The ``tee`` variants, one pass set per group of equal shared options."""
    groups: dict[tuple, dict[str, dict]] = {}
    for variant in chosen:
        options = variant.parsed()
        shared = tuple(sorted((k, v) for k, v in options.items() if k not in SUMS_OPTIONS))
        sums = {k: v for k, v in options.items() if k in SUMS_OPTIONS}
        groups.setdefault(shared, {})[variant.name] = sums
    chunk = int(chunk_option(chosen[0], dev_set)[0].split("=")[1]) if chosen else 4
    for shared, members in groups.items():
        out = {name: dev_set.maps_folder(args.work, name) for name in members}
        logger.info("tee %s: %s", dev_set.name, ", ".join(members))
        options = {**dict(shared), "chunk_size": chunk}
        runner.timed(f"tee/{dev_set.name}/{'+'.join(members)}",
                     lambda o=out, opts=options, m=members: write_tee_maps(dev_set, o, opts, m))


def stage_maps(args: argparse.Namespace, runner: Runner, dev_set: DevSet) -> None:
    chosen = [v for v in variants(dev_set.name) if not args.only or v.name in args.only]
    stage_tee(args, runner, dev_set, [v for v in chosen if v.tee])
    for variant in chosen:
        if variant.tee:
            continue
        options = [*variant.options, *chunk_option(variant, dev_set)]
        option_args = ["--option", *options] if options else []
        model_args = dev_set.model_args
        if variant.size:
            model_args = [*model_args[:-2], "--size", str(variant.size)]
        runner.loupe(f"maps/{dev_set.name}/{variant.name}", [
            "maps", *dev_set.data_args, "--limit", str(dev_set.dev), *model_args,
            "--method", variant.method, *option_args, *variant.cli,
            "--batch-size", "8", "--device", "cpu", "--no-progress",
            "--out", str(dev_set.maps_folder(args.work, variant.name)),
        ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/work/runs-shuffle/dev"),
                   help="outputs (maps, statistics, tables); never inside the repository")
    p.add_argument("--assets", type=Path,
                   default=Path(os.environ.get("LOUPE_ASSETS", REPO.parent / "shared/assets")))
    p.add_argument("--loop", type=Path, default=Path("/work/runs-shuffle/loop"),
                   help="work folder of bench/coco128_loop.py (data/ and classifier/)")
    p.add_argument("--sets", nargs="+", default=["coco", "cats"],
                   choices=["coco", "cats", "loop"])
    p.add_argument("--stages", nargs="+", default=["maps", "crf", "evaluate"])
    p.add_argument("--only", nargs="+", help="only these variants (maps stage)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--job", default="main",
                   help="name of this process's timings file (timings-JOB.json), so that "
                        "parallel jobs on one --work do not overwrite each other's")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = start_runner(args)
    runner.timings_path = args.work / f"timings-{args.job}.json"
    runner.timings = (json.loads(runner.timings_path.read_text())
                      if runner.timings_path.is_file() else {})
    for dev_set in dev_sets(args):
        dev_set.check_sorted()
        if "maps" in args.stages:
            stage_maps(args, runner, dev_set)
        if "crf" in args.stages:
            runner.timed(f"crf/{dev_set.name}", lambda s=dev_set: write_crf_stats(args, s))
        if "evaluate" in args.stages:
            runner.timed(f"evaluate/{dev_set.name}", lambda s=dev_set: write_tables(args, s))
    total = sum(v["cpu_s"] for v in runner.timings.values())  # this job's
    logger.info("total CPU so far: %.1f s (%.1f min)", total, total / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
