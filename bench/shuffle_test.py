"""Issue 10's test halves, run once with the defaults the dev screening chose
(docs/shuffle-saliency.md, "Test results").

    nice -n 3 python bench/shuffle_test.py --work /work/runs-shuffle/test --sets coco cats loop

The test half of a set is the ids after the first ``n // 2`` in sorted order (the protocol).
``loupe maps`` reads exactly those images from a derived data set of links under
``<work>/data`` (YOLO sets: ``images/`` and ``labels/`` of the test ids and ``data.yaml``; the
loop set: a split file ``testhalf.txt`` of its test ids beside its ``train.txt``). The model,
class map, size and evaluation are the dev screening's (bench/shuffle_dev.py,
bench/shuffle_dev_eval.py): the same functions run on the other half.

Methods: the references and the baselines, SmoothGrad and shuffle at T = 32 (the previous
default ``shuffle-T32``; the chosen default is its maps smoothed post-hoc, as on dev), every
method at every smoothing. CAM + dense CRF at the five thresholds around raw CAM's best
threshold on dev (``--crf-around``; all 20 cost 11 s of CPU per image here), its best over
those five; compared with the others at their own best over all 20.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shuffle_dev import chunk_option, dev_sets, mobilenet_args  # noqa: E402,F401
from shuffle_dev_eval import (  # noqa: E402
    FRACTIONS,
    DevSet,
    crf_stats,
    difference,
    folder_stats,
    load_truth,
    summary,
)
from shuffle_dev_variants import confirmation, references  # noqa: E402
from study import Runner, start_runner  # noqa: E402
from study_eval import (  # noqa: E402
    VariantStats,
    _interval,
    interval_cell,
    load_stats,
    miou_from_stats,
    resample_weights,
    resampled_curves,
    save_stats,
)

from loupe.data.spec import DatasetSpec, open_spec  # noqa: E402
from loupe.io import atomic_path  # noqa: E402

logger = logging.getLogger("shuffle_test")
METHODS = ("baseline-background", "baseline-gaussian", "cam", "gradcam", "saliency",
           "smoothgrad-T32", "shuffle-T32")
CRF = "cam+crf"


def full_ids(spec: DatasetSpec) -> list[str]:
    ids = list(open_spec(DatasetSpec(**{**spec.__dict__, "limit": 0}),
                                     images=False).ids)
    if ids != sorted(ids):
        raise SystemExit(f"{spec.root}: ids not in sorted order")
    return ids


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_symlink():
        target.symlink_to(source)


def yolo_test_root(spec: DatasetSpec, work: Path, name: str) -> Path:
    """A YOLO folder of links holding the test half of ``spec``'s split."""
    root, split = Path(spec.root), spec.split
    out = work / "data" / name
    test = full_ids(spec)[len(full_ids(spec)) // 2:]
    images = {p.stem: p for p in (root / "images" / split).iterdir()}
    for sample_id in test:
        image = images[sample_id]
        _link(image.resolve(), out / "images" / split / image.name)
        _link((root / "labels" / split / f"{sample_id}.txt").resolve(),
              out / "labels" / split / f"{sample_id}.txt")
    if (root / "data.yaml").is_file():
        _link((root / "data.yaml").resolve(), out / "data.yaml")
    return out


def test_sets(args: argparse.Namespace) -> list[DevSet]:
    """The dev sets of bench/shuffle_dev.py, re-pointed at their test halves."""
    out = []
    for dev in dev_sets(args):
        spec = dev.spec
        total = len(full_ids(spec))
        count = total - total // 2
        if dev.name == "loop":
            ids = full_ids(spec)[total // 2:]
            (Path(spec.root) / "testhalf.txt").write_text("\n".join(ids) + "\n")
            data_args = [*dev.data_args[:-1], "testhalf"]
            new_spec = DatasetSpec(**{**spec.__dict__, "split": "testhalf", "limit": 0})
        else:
            root = yolo_test_root(spec, args.work, dev.name)
            data_args = list(dev.data_args)
            data_args[data_args.index("--root") + 1] = str(root)
            new_spec = DatasetSpec(**{**spec.__dict__, "root": str(root), "limit": 0})
        test = DevSet(dev.name, data_args, dev.model_args, count, count, new_spec,
                      dev.class_map, dev.size)
        got = list(open_spec(new_spec, images=False).ids)
        if got != full_ids(spec)[total // 2:]:
            raise SystemExit(f"{dev.name}: the derived test set does not hold the test half")
        out.append(test)
    return out


def stage_maps(args: argparse.Namespace, runner: Runner, test: DevSet) -> None:
    every = {v.name: v for v in [*references(), *confirmation()]}
    for name in args.methods:
        variant = every[name]
        options = [*variant.options, *chunk_option(variant, test)]
        runner.loupe(f"maps/{test.name}/{name}", [
            "maps", *test.data_args, *test.model_args, "--method", variant.method,
            *(["--option", *options] if options else []), "--batch-size", "8",
            "--device", "cpu", "--no-progress", "--out", str(test.maps_folder(args.work, name)),
        ])


def crf_thresholds(args: argparse.Namespace, name: str) -> list[float]:
    if args.crf_thresholds:
        return [round(t, 2) for t in args.crf_thresholds]
    dev = json.loads((args.dev / name / "results.json").read_text())
    best = dev["rows"]["cam@0"]["threshold"]
    return [round(best + d, 2) for d in (-0.10, -0.05, 0.0, 0.05, 0.10) if 0 <= best + d < 1]


def vs_crf(a: torch.Tensor, crf: torch.Tensor, n: int) -> list[float]:
    """Paired bootstrap of ``a``'s best mIoU (over all of its thresholds) minus CAM+CRF's best
    (over its own thresholds), the thresholds re-chosen in every resample."""
    weights = resample_weights(a.shape[0], n, 0)
    d = resampled_curves(a, weights).amax(1) - resampled_curves(crf, weights).amax(1)
    low, high = _interval(d, 0.95)
    observed = float(miou_from_stats(a.sum(0)).max() - miou_from_stats(crf.sum(0)).max())
    return [100 * observed, 100 * low, 100 * high]


def evaluate(args: argparse.Namespace, test: DevSet) -> dict[str, Any]:
    folder = args.work / test.name
    stats_dir = folder / "stats"
    stats_dir.mkdir(parents=True, exist_ok=True)
    truth = None
    stats: dict[tuple[str, float], VariantStats] = {}
    for name in args.methods:
        maps = test.maps_folder(args.work, name)
        if len(list(maps.glob("*.npz"))) < test.dev:
            logger.info("%s/%s: maps not complete; left out", test.name, name)
            continue
        for fraction in FRACTIONS:
            path = stats_dir / f"{name}@{fraction:g}.npz"
            if not path.is_file():
                truth = truth or load_truth(test)
                save_stats(path, folder_stats(maps, truth, fraction))
            stats[name, fraction] = load_stats(path)
    rows: dict[str, Any] = {}
    thresholds = crf_thresholds(args, test.name)
    crf_path = stats_dir / (f"{CRF}.npz" if not args.crf_thresholds
                            else f"{CRF}@{thresholds[0]:g}-{thresholds[-1]:g}.npz")
    if not crf_path.is_file() and (test.maps_folder(args.work, "cam") / ".").is_dir() and (
            "crf" in args.stages):
        save_stats(crf_path, crf_stats(test, test.maps_folder(args.work, "cam"), thresholds))
    crf = load_stats(crf_path).stats if crf_path.is_file() else None
    if crf is not None:
        curve = (100 * miou_from_stats(crf.sum(0))).tolist()
        j = max(range(len(curve)), key=curve.__getitem__)
        rows[CRF] = {"best": curve[j], "threshold": thresholds[j], "curve": curve,
                     "thresholds": thresholds}
    cam = stats.get(("cam", 0.0))
    for (name, fraction), value in stats.items():
        row = summary(value.stats)
        if cam is not None and (name, fraction) != ("cam", 0.0):
            row["vs_cam"] = difference(args, value.stats, cam.stats, (name, "cam"))
        if crf is not None:
            row["vs_crf"] = vs_crf(value.stats, crf, args.bootstrap)
        if name == "shuffle-T32" and fraction > 0:
            row["vs_raw"] = difference(args, value.stats, stats[name, 0.0].stats, (name, name))
        rows[f"{name}@{fraction:g}"] = row
    return {"set": test.name, "images": test.dev, "crf_thresholds": thresholds, "rows": rows}


def table(data: dict[str, Any], fraction: str) -> str:
    lines = ["| method | best mIoU (thr) | @0.15 | spread 0.1-0.6 | minus CAM (raw) | "
             "minus CAM+CRF |", "|---|---|---|---|---|---|"]
    for key, row in data["rows"].items():
        name, _, f = key.partition("@")
        if key == CRF:
            lines.append(f"| cam + CRF (at {', '.join(map(str, data['crf_thresholds']))}) | "
                         f"{row['best']:.1f} ({row['threshold']:.2f}) | | | | |")
            continue
        if f != fraction:
            continue
        cam = row.get("vs_cam", {}).get("best")
        lines.append(f"| {name} | {row['best']:.1f} ({row['threshold']:.2f}) | "
                     f"{row['fixed']['0.15']:.1f} | {row['spread']:.1f} | {interval_cell(cam)} | "
                     f"{interval_cell(row.get('vs_crf'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/work/runs-shuffle/test"))
    p.add_argument("--dev", type=Path, default=Path("/work/runs-shuffle/dev"),
                   help="the dev screening's work folder (CAM's best dev threshold for CRF)")
    p.add_argument("--assets", type=Path,
                   default=Path(os.environ.get("LOUPE_ASSETS", "/work/shared/assets")))
    p.add_argument("--loop", type=Path, default=Path("/work/runs-shuffle/loop"))
    p.add_argument("--sets", nargs="+", default=["coco", "cats", "loop"])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--stages", nargs="+", default=["maps", "crf", "evaluate"])
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--crf-thresholds", type=float, nargs="+",
                   help="CAM + CRF at these thresholds instead of the five around CAM's dev "
                        "best (one set of --sets at a time)")
    p.add_argument("--job", default="test")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    runner = start_runner(args)
    runner.timings_path = args.work / f"timings-{args.job}.json"
    runner.timings = (json.loads(runner.timings_path.read_text())
                      if runner.timings_path.is_file() else {})
    for test in test_sets(args):
        if "maps" in args.stages:
            stage_maps(args, runner, test)
        if "evaluate" in args.stages:
            data = runner.timed(f"evaluate/{test.name}", lambda t=test: evaluate(args, t))
            folder = args.work / test.name
            suffix = "" if not args.crf_thresholds else "-crf-extended"
            with atomic_path(folder / f"results{suffix}.json") as tmp:
                Path(tmp).write_text(json.dumps(data, indent=1) + "\n")
            text = "\n\n".join(f"## {test.name} test ({test.dev} images), smoothing f={f}\n\n"
                               + table(data, f) for f in ("0", "0.02", "0.04", "0.08"))
            with atomic_path(folder / f"tables{suffix}.md") as tmp:
                Path(tmp).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
