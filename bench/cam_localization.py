"""CAM's localization protocol on the data here (docs/cam.md, docs/gradcam.md).

    nice -n 10 python bench/cam_localization.py --work /work/runs-loc

Stages (each resumable: finished map files and trained models are kept):

coco128    the ImageNet MobileNetV2 of the shared assets on coco128's 128 images through the
           shipped COCO -> ImageNet class map, maps of each image's 5 best COCO classes
           (``loupe maps --topk 5``) by CAM and by Grad-CAM at 224 x 224, then ``loupe
           evaluate --boxes --class-map coco_to_imagenet`` against the boxes of coco128's
           polygons: top-1 / top-5 localization error (CAM's 20%-of-the-maximum box), the
           heuristic's five boxes, the WSOL figures beside them; Grad-CAM again with its own
           paper's 15% rule (``--loc-threshold 0.15``). The reference: the same classes with
           a centred Gaussian for a map (``baseline-gaussian``), i.e. a centred box
synthetic  ``loupe train --pool gap`` and ``--pool gmp`` (the demo's recipe, ``small``
           backbone from random weights on 320 images of 96 x 96, but 16 epochs, and the
           learning rate of each pool: GAP 0.1, GMP 0.03; in 8-epoch trials GMP at 0.1
           stalled at val mAP 0.33 and GAP at 0.03 reached 0.46) for each seed, then
           CAM maps of 256 held-out ``test`` images, of the 5 classes ranked (``--topk 5``,
           for the localization errors) and of the image-level labels (for the mIoU of the
           pseudo-masks, which maps of absent classes would distort), and ``loupe evaluate
           --boxes`` of both
figure     ``docs/figures/cam-gap-gmp.png``: six test images of seed 0 with their ground-truth
           boxes and the GAP and GMP classifiers' CAM of the first class, with CAM's box

Every ``loupe`` command runs in this process and is appended to ``<work>/commands.sh``; CPU and
wall seconds per step go to ``<work>/timings.json``; ``<work>/summary.md`` holds the tables.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import Runner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("loc")
LEARNING_RATES = {"gap": "0.1", "gmp": "0.03"}
SYNTHETIC = ("--dataset", "synthetic", "--synthetic-train", "320", "--synthetic-val", "64",
             "--synthetic-size", "96")
TEST_IMAGES = 256
EPOCHS = 16


def trained_epochs(run: Path) -> int:
    """Epochs in ``run/history.json`` (0 without one): a stopped run has fewer than EPOCHS."""
    path = run / "history.json"
    return len(json.loads(path.read_text())) if path.is_file() else 0


def coco_args(assets: Path) -> list[str]:
    weights = assets / "weights"
    return ["--dataset", "yolo", "--root", str(assets / "coco128-seg"), "--split", "train2017",
            "--class-names", "coco", "--model", "mobilenet_v2", "--weights",
            str(weights / "mobilenet_v2_imagenet1k_coral.pth"), "--scale", "x*2-1",
            "--patch", f"{weights / 'tf_same_padding.py'}:tf_same_padding",
            "--class-map", "coco_to_imagenet", "--size", "224"]


def stage_coco128(args: argparse.Namespace, runner: Runner) -> None:
    work = args.work / "coco128"
    data = coco_args(args.assets)
    for method in ("cam", "gradcam", "baseline-gaussian"):
        runner.loupe(f"coco128/maps/{method}", [
            "maps", *data, "--method", method, "--topk", "5", "--batch-size", "8",
            "--device", "cpu", "--out", str(work / method), "--no-progress"])
    evaluate = ["evaluate", *data[:8], "--class-map", "coco_to_imagenet",
                "--boxes", "--bootstrap", "0", "--overlays", "4", "--no-progress"]
    runner.loupe("coco128/evaluate", [*evaluate, "--maps", str(work / "cam"),
                                      str(work / "gradcam"), str(work / "baseline-gaussian"),
                                      "--out", str(work / "evaluate")])
    runner.loupe("coco128/evaluate-15", [*evaluate, "--maps", str(work / "gradcam"),
                                         "--loc-threshold", "0.15",
                                         "--out", str(work / "evaluate-15")])


def stage_synthetic(args: argparse.Namespace, runner: Runner) -> None:
    for seed in args.seeds:
        for pool in ("gap", "gmp"):
            run = args.work / "synthetic" / f"{pool}-{seed}"
            if trained_epochs(run) < EPOCHS:  # model.pt is written every epoch
                resume = ["--resume"] if (run / "checkpoint.pt").is_file() else []
                runner.loupe(f"synthetic/train/{pool}-{seed}", [
                    "train", *SYNTHETIC, "--backbone", "small", "--pretrained", "none",
                    "--pool", pool, "--epochs", str(EPOCHS), "--batch-size", "32", "--lr",
                    LEARNING_RATES[pool],
                    "--head-lr-mult", "1", "--resize-long", "84", "108", "--crop", "96",
                    "--jitter", "0.2", "0.2", "0.2", "0", "--seed", str(seed),
                    "--device", "cpu", "--out", str(run), "--no-progress", *resume])
            test = [*SYNTHETIC[:5], str(TEST_IMAGES), *SYNTHETIC[6:], "--synthetic-seed",
                    str(seed), "--split", "test"]
            maps = ["maps", *test, "--model", str(run), "--method", "cam", "--device", "cpu",
                    "--no-progress"]
            runner.loupe(f"synthetic/maps/{pool}-{seed}", [
                *maps, "--topk", "5", "--out", str(run / "maps-test")])
            runner.loupe(f"synthetic/maps-labels/{pool}-{seed}", [
                *maps, "--out", str(run / "maps-labels")])
            runner.loupe(f"synthetic/evaluate/{pool}-{seed}", [
                "evaluate", *test, "--maps", str(run / "maps-test"), str(run / "maps-labels"),
                "--boxes", "--bootstrap", "0", "--overlays", "0", "--out",
                str(run / "evaluate"), "--no-progress"])


def stage_figure(args: argparse.Namespace, runner: Runner) -> None:
    """Image and ground-truth boxes | GAP CAM and its box | GMP CAM and its box (seed 0)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from PIL import Image

    from loupe.data.synthetic import make_synthetic
    from loupe.metrics.localization import cam_box

    data = make_synthetic(TEST_IMAGES, 96, 2)  # the test split of seed 0
    picks = [0, 1, 2, 3, 4, 5]
    figure = Figure(figsize=(6.3, 2.1 * len(picks)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(picks), 3)
    for row, index in enumerate(picks):
        sample = data[index]
        label = int(sample.box_labels[0])
        panels = [(f"image, boxes of class {label}", None)]
        for pool in ("gap", "gmp"):
            with np.load(args.work / "synthetic" / f"{pool}-0" / "maps-labels"
                         / f"{sample.id}.npz") as stored:
                k = list(stored["classes"]).index(label)
                panels.append((f"{pool.upper()} CAM", stored["maps"][k].astype(np.float32)))
        for ax, (title, scoremap) in zip(axes[row], panels, strict=True):
            ax.imshow(np.asarray(sample.image))
            if scoremap is None:
                for x0, y0, x1, y1 in sample.boxes[sample.box_labels == label].tolist():
                    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                           edgecolor="lime", linewidth=1.5))
            else:
                ax.imshow(scoremap, cmap="jet", alpha=0.5)
                x0, y0, x1, y1 = cam_box(torch.from_numpy(scoremap)).tolist()
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1,
                                       fill=False, edgecolor="white", linewidth=1.5))
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    figure.tight_layout()
    out = REPO / "docs" / "figures" / "cam-gap-gmp.png"
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=80)
    buffer.seek(0)
    with Image.open(buffer) as image:  # a 128-colour palette: a fifth of the size
        image.convert("RGB").quantize(128).save(out, optimize=True)
    logger.info("wrote %s", out)


def _row(name: str, loc: dict, miou: float | None, extra: str = "") -> str:
    ilsvrc = loc["ilsvrc"]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    return (f"| {name}{extra} | {pct(ilsvrc['top1_loc_error'])} | "
            f"{pct(ilsvrc['top5_loc_error'])} | {pct(ilsvrc['top5_loc_error_heuristic'])} | "
            f"{pct(ilsvrc['top1_cls_error'])} | {pct(ilsvrc['top5_cls_error'])} | "
            f"{pct(loc['gt_known_loc'])} | {pct(loc['max_box_acc_v2'])} | {pct(miou)} |")


HEADER = ["| run | top-1 loc err | top-5 loc err | top-5 loc err, heuristic | top-1 cls err | "
          "top-5 cls err | GT-known loc | MaxBoxAccV2 | best mIoU |",
          "|---|---|---|---|---|---|---|---|---|"]


def summary(args: argparse.Namespace) -> str:
    """The tables of ``summary.md`` from the evaluation folders that exist (percent)."""
    lines = ["# CAM's localization protocol (percent)", ""]
    coco = args.work / "coco128"
    for folder, note in (("evaluate", ""), ("evaluate-15", " (15% of the maximum)")):
        path = coco / folder / "results.json"
        if path.is_file():
            results = json.loads(path.read_text())
            lines += [f"## coco128, MobileNetV2 through coco_to_imagenet{note}", "", *HEADER]
            for name, loc in results["localization"].items():
                lines.append(_row(name, loc, None))  # top-5 maps: no pseudo-mask mIoU
            images = next(iter(results["localization"].values()))["ilsvrc"]["images"]
            lines += ["", f"{images} images with a mapped class.", ""]
    rows: dict[str, list[dict]] = {"gap": [], "gmp": []}
    for seed in args.seeds:
        for pool in rows:
            run = args.work / "synthetic" / f"{pool}-{seed}"
            path = run / "evaluate" / "results.json"
            if not path.is_file():
                continue
            results = json.loads(path.read_text())
            history = json.loads((run / "history.json").read_text())
            rows[pool].append({"seed": seed, "loc": results["localization"]["maps-test"],
                               "miou": results["methods"]["maps-labels"]["miou"],
                               "val_map": history[-1].get("val_map")})
    if rows["gap"] or rows["gmp"]:
        lines += ["## synthetic, GAP against GMP (CAM, 256 test images)", "", *HEADER]
        for pool, found in rows.items():
            for r in found:
                lines.append(_row(f"{pool} seed {r['seed']}", r["loc"], r["miou"],
                                  f" (val mAP {100 * r['val_map']:.1f})"))
        for pool, found in rows.items():
            if len(found) > 1:
                errors = [r["loc"]["ilsvrc"]["top1_loc_error"] for r in found]
                lines.append(f"\n{pool}: top-1 loc error mean {100 * statistics.mean(errors):.1f}"
                             f" (sd {100 * statistics.stdev(errors):.1f}) over {len(found)} seeds")
        lines.append("")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--assets", type=Path, default=Path(os.environ.get(
        "LOUPE_ASSETS", REPO.parent / "shared" / "assets")))
    p.add_argument("--stages", nargs="+", default=["coco128", "synthetic", "figure"],
                   choices=("coco128", "synthetic", "figure"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.work)
    stages = {"coco128": stage_coco128, "synthetic": stage_synthetic, "figure": stage_figure}
    for name in args.stages:
        stages[name](args, runner)
    (args.work / "summary.md").write_text(summary(args), encoding="utf-8")
    print((args.work / "summary.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
