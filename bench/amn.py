"""AMN against CAM of the same classifier, on the synthetic set and on coco128 (docs/amn.md).

    nice -n 10 python bench/amn.py --work /work/runs-amn --threads 1

Per set, every step a ``loupe`` command (appended to ``<work>/commands.sh``; CPU and wall
seconds in ``<work>/timings.json``), each resumable:

classifier  synthetic: ``loupe train --backbone small`` (bench/study.py's recipe); coco128:
            the MobileNetV2 run of ``bench/coco128_loop.py`` (``--coco-run``, read only)
cam         ``loupe maps --method cam`` of the train split for its image-level labels, with
            the authors' multi-scale protocol (scales 1.0 0.5 1.5 2.0 and flips)
labels      ``loupe masks --confident 0.30 0.05`` (the IRN/AMN confident thresholds)
amn         ``loupe train-amn`` on them (recipe: the authors', except the epochs and the crop,
            see ``--*-epochs`` and ``--*-crop``)
amn-maps    ``loupe maps --method amn`` of the train split, the same protocol
evaluate    ``loupe evaluate --maps cam amn`` against the train split's ground truth (the
            WSSS protocol: pseudo-masks of the training images): best mIoU, mIoU at fixed
            thresholds, spread over 0.1-0.6, bootstrap intervals, paired difference at the
            best thresholds; then :func:`spread_bootstrap` adds a paired bootstrap interval
            of the spread difference (AMN's robustness figure), into ``summary.json``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import Runner, start_runner  # noqa: E402

from loupe.data.spec import DatasetSpec, open_spec  # noqa: E402
from loupe.mapsets.files import load_map_file, output_path  # noqa: E402
from loupe.metrics.segmentation import mean_iou  # noqa: E402
from loupe.metrics.sweep import sweep_confusions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("amn")
SCALES = ("1.0", "0.5", "1.5", "2.0")
SPREAD_THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(11))  # 0.10 .. 0.60


def per_image_confusions(maps_dir: Path, dataset, num_classes: int) -> torch.Tensor:
    """``(I, T, N, N)`` confusion matrices of each image's IRN-rule masks at
    :data:`SPREAD_THRESHOLDS`, images in the data set's order."""
    out = []
    for index in range(len(dataset)):
        sample = dataset[index]
        maps, classes = load_map_file(output_path(maps_dir, sample.id, ".npz"))
        out.append(sweep_confusions(torch.from_numpy(maps), torch.from_numpy(classes),
                                    sample.mask, SPREAD_THRESHOLDS, num_classes))
    return torch.stack(out)


def spread_bootstrap(a: torch.Tensor, b: torch.Tensor, n: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Paired bootstrap (images resampled, the same resamples for both) of the spread
    ``max_t mIoU - min_t mIoU`` over the thresholds of ``a`` and ``b`` ``(I, T, N, N)``:
    the observed spreads and the percentile interval of ``spread(b) - spread(a)``."""
    images = a.shape[0]
    g = torch.Generator().manual_seed(seed)
    weights = torch.zeros(n, images, dtype=torch.float64)
    weights.scatter_add_(1, torch.randint(images, (n, images), generator=g),
                         torch.ones(n, images, dtype=torch.float64))

    def spreads(conf: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        summed = torch.einsum("ri,itab->rtab", w, conf.double())
        miou = mean_iou(summed)  # (R, T)
        return miou.amax(1) - miou.amin(1)

    ones = torch.ones(1, images, dtype=torch.float64)
    observed_a, observed_b = float(spreads(a, ones)[0]), float(spreads(b, ones)[0])
    difference = spreads(b, weights) - spreads(a, weights)
    alpha = (1 - level) / 2
    low, high = np.quantile(difference.numpy(), [alpha, 1 - alpha]).tolist()
    return {"spread_cam": observed_a, "spread_amn": observed_b,
            "difference": observed_b - observed_a, "low": low, "high": high, "n": n,
            "thresholds": list(SPREAD_THRESHOLDS)}


def pipeline(runner: Runner, work: Path, key: str, data_args: list[str],
             classifier: Path, maps_extra: list[str], amn_extra: list[str],
             spec: DatasetSpec, tag: str = "") -> dict[str, object]:
    """CAM maps -> confident labels -> AMN -> AMN maps -> evaluation, in ``work``; the AMN
    run, its maps, the evaluation and ``summary.json`` carry ``-tag`` (variants share the
    classifier's maps and labels)."""
    common = ["--device", "cpu", "--no-progress"]
    protocol = ["--scales", *SCALES, "--flip", *maps_extra]
    suffix = f"-{tag}" if tag else ""
    run = work / f"amn{suffix}"
    maps = {"cam": work / "maps-cam", "amn": work / f"maps-amn{suffix}"}
    runner.loupe(f"{key}/maps-cam", ["maps", *data_args, "--split", "train", "--model",
                                     str(classifier), "--method", "cam", *protocol,
                                     "--out", str(maps["cam"]), *common])
    runner.loupe(f"{key}/labels", ["masks", "--maps", str(maps["cam"]), "--confident", "0.30",
                                   "0.05", "--out", str(work / "labels"), "--no-progress"])
    if not (run / "model.pt").is_file() or _unfinished(run):
        resume = ["--resume"] if (run / "checkpoint.pt").is_file() else []
        runner.loupe(f"{key}/train-amn{suffix}", [
            "train-amn", "--classifier", str(classifier), "--masks", str(work / "labels"),
            *data_args, "--val-split", "val", *amn_extra, *resume, "--out", str(run),
            "--device", "cpu", "--no-progress"])
    runner.loupe(f"{key}/maps-amn{suffix}", ["maps", *data_args, "--split", "train",
                                             "--model", str(run), "--method", "amn",
                                             *protocol, "--out", str(maps["amn"]), *common])
    evaluation = work / f"evaluate{suffix}"
    runner.loupe(f"{key}/evaluate{suffix}", [
        "evaluate", "--maps", str(maps["cam"]), str(maps["amn"]), "--names", "cam", "amn",
        *data_args, "--split", "train", "--out", str(evaluation), *common])
    dataset = open_spec(spec, images=False) if spec.kind != "synthetic" else open_spec(spec)
    num_classes = len(dataset.class_names)
    confusions = {name: runner.timed(f"{key}/spread-{name}{suffix}", lambda d=d: (
        per_image_confusions(d, dataset, num_classes))) for name, d in maps.items()}
    results = json.loads((evaluation / "results.json").read_text())
    summary = {"spread_bootstrap": spread_bootstrap(confusions["cam"], confusions["amn"]),
               "history": json.loads((run / "history.json").read_text()),
               **{name: results["methods"][name]["sweep"] for name in maps},
               "comparisons": results["comparisons"]}
    (work / f"summary{suffix}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _unfinished(run: Path) -> bool:
    """True when the run's history has fewer epochs than its config asks for."""
    history = json.loads((run / "history.json").read_text()) if (
        run / "history.json").is_file() else []
    epochs = json.loads((run / "model.json").read_text())["config"]["epochs"]
    return len(history) < epochs


def run_synthetic(args: argparse.Namespace, runner: Runner) -> dict[str, object]:
    work = args.work / "synthetic"
    classifier = work / "classifier"
    n_train, n_val, size = args.synthetic
    sizes = ["--synthetic-train", str(n_train), "--synthetic-val", str(n_val),
             "--synthetic-size", str(size)]
    if not (classifier / "model.pt").is_file():
        runner.loupe("synthetic/classifier", [
            "train", "--dataset", "synthetic", *sizes, "--backbone", "small",
            "--pretrained", "none", "--epochs", "16", "--batch-size", "32", "--lr", "0.1",
            "--head-lr-mult", "1", "--resize-long", str(round(size * 0.875)),
            str(round(size * 1.125)), "--crop", str(size), "--jitter", "0.2", "0.2", "0.2",
            "0", "--seed", "0", "--device", "cpu", "--out", str(classifier), "--no-progress"])
    spec = DatasetSpec("synthetic", split="train", synthetic_train=n_train,
                       synthetic_val=n_val, synthetic_size=size, synthetic_seed=0)
    amn = ["--epochs", str(args.synthetic_epochs), "--crop", str(size), "--batch-size", "16"]
    return pipeline(runner, work, "synthetic", ["--dataset", "synthetic", *sizes],
                    classifier, [], [*amn, *shlex.split(args.amn_args)], spec, args.tag)


def run_coco(args: argparse.Namespace, runner: Runner) -> dict[str, object]:
    classifier, data = args.coco_run / "classifier", args.coco_run / "data"
    if not (classifier / "model.json").is_file():
        raise SystemExit(f"{classifier}: no classifier; run python bench/coco128_loop.py "
                         f"--work {args.coco_run} --stages prepare train first")
    spec = DatasetSpec("folder", root=str(data), split="train")
    amn = ["--epochs", str(args.coco_epochs), "--crop", str(args.coco_crop),
           "--batch-size", "16", "--rescale", *(str(r) for r in args.coco_rescale)]
    return pipeline(runner, args.work / "coco128", "coco128",
                    ["--dataset", "folder", "--root", str(data)], classifier,
                    ["--size", str(args.coco_size)], [*amn, *shlex.split(args.amn_args)],
                    spec, args.tag)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="output folder (outside the repo)")
    p.add_argument("--sets", nargs="+", default=["synthetic", "coco128"],
                   choices=("synthetic", "coco128"))
    p.add_argument("--synthetic", type=int, nargs=3, default=[640, 160, 64],
                   metavar=("TRAIN", "VAL", "SIZE"))
    p.add_argument("--synthetic-epochs", type=int, default=5)
    p.add_argument("--coco-run", type=Path, default=Path(os.environ.get(
        "LOUPE_COCO_RUN", "/work/runs-shuffle/loop")),
        help="a bench/coco128_loop.py work folder (its classifier/ and data/)")
    p.add_argument("--coco-epochs", type=int, default=5)
    p.add_argument("--coco-crop", type=int, default=320)
    p.add_argument("--coco-size", type=int, default=320, help="maps: images resized to SIZE^2")
    p.add_argument("--coco-rescale", type=float, nargs=2, default=[0.25, 0.75],
                   help="AMN's random rescale of the (640-pixel) coco images: the authors' "
                   "0.5-1.5 of the 320-pixel size the maps are made at")
    p.add_argument("--tag", default="", help="name of an AMN variant (its run, maps and "
                   "evaluation get -TAG; the classifier's maps and labels are shared)")
    p.add_argument("--amn-args", default="", metavar="ARGS",
                   help="more train-amn arguments, one string (e.g. '--eps 0.2')")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = start_runner(args)
    for name in args.sets:
        summary = run_synthetic(args, runner) if name == "synthetic" else run_coco(args, runner)
        logger.info("%s: %s", name, json.dumps(summary["spread_bootstrap"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
