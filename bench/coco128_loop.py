"""The WSSS loop on real data: a classifier trained from image-level labels on coco128, then
pseudo-masks from its maps, by method (docs/results-coco128-trained.md).

    nice -n 10 python bench/coco128_loop.py --work /work/runs-loop

Stages (each resumable: a trained model and finished map files are kept):

prepare   a folder data set of the 126 coco128 images that have objects: links to the images,
          index masks of all 80 COCO classes (class id + 1), ``labels.json`` (the classes of
          each image's polygons) and a fixed split: images sorted by id, every fifth one
          (positions 4, 9, ...) in ``val.txt``, the rest in ``train.txt``
train     ``loupe train``: torchvision MobileNetV2 initialised from the ImageNet checkpoint of
          the shared assets (``--init``, its own ``x*2-1`` input scaling), a new 80-class
          linear head, the library's WSSS recipe (frozen BatchNorm statistics, crop 512, SGD
          lr 0.01 with poly decay) except two settings for a set this small: 40 epochs and the
          head at 40x the backbone's rate, not 5 and 10x. The recipe is VOC's (20 classes,
          1,464 images: 460 steps in 5 epochs); here 101 images make 6 steps an epoch, and the
          loss, a mean over 80 classes instead of 20, moves each class's logit 4x less per
          step. With the recipe as it is (5 epochs, 10x) the training loss stayed at the level
          of predicting the class frequencies (0.14) and the maps were noise (Grad-CAM 2.1%
          mIoU, below the centred-Gaussian baseline)
maps      ``loupe maps`` of every method for the ground-truth classes of the train split
          (the WSSS protocol: pseudo-masks are made for the classifier's training images),
          at 320x320; the three sampling methods (32 passes per image) on the first
          ``--sampling-images`` (32) train images only, two rows per pass (at 320x320 larger
          chunks spent more time in the kernel, faulting in freed buffers, than computing)
evaluate  ``loupe evaluate`` against the train split's ground truth (mIoU across background
          thresholds, bootstrap intervals, report and plot): every other method on all train
          images (``evaluate-101``), every method on the first 32 (``evaluate-32``)

Every ``loupe`` command runs in this process and is appended to ``<work>/commands.sh``; CPU
seconds per step go to ``<work>/timings.json`` (see bench/study.py's ``Runner``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import start_runner  # noqa: E402
from study_data import _link, _write_text  # noqa: E402

from loupe.data import COCO_CLASSES, open_dataset  # noqa: E402
from loupe.masks.palette import save_mask_png  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("loop")
# Every method of the registry except Score-CAM (one forward per channel of MobileNetV2's
# 1280-channel last layer: see the document for its subset run).
METHODS = ("baseline-background", "baseline-gaussian", "cam", "gradcam", "gradcam++",
           "xgradcam", "layercam", "hirescam", "saliency", "gradxinput", "smoothgrad",
           "integrated-gradients", "shuffle")
SAMPLING = ("smoothgrad", "integrated-gradients", "shuffle")


def prepare(assets: Path, out: Path) -> dict[str, object]:
    """Write the coco128 folder data set with its fixed train/val split into ``out``."""
    dataset = open_dataset("yolo", assets / "coco128-seg", "train2017",
                           names=list(COCO_CLASSES), images=False)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[int]] = {}
    for index in range(len(dataset)):
        sample = dataset[index]
        present = sample.labels.nonzero().flatten().tolist()
        if not present:
            continue
        image_path = dataset.image_path(index)
        _link(image_path.resolve(), out / "images" / image_path.name)
        save_mask_png(out / "masks" / f"{sample.id}.png", sample.mask)
        labels[sample.id] = present
    ids = sorted(labels)
    val = ids[4::5]
    train = [i for i in ids if i not in set(val)]
    _write_text(out / "class_names.txt", "\n".join(dataset.class_names) + "\n")
    _write_text(out / "labels.json", json.dumps(labels, indent=1) + "\n")
    _write_text(out / "train.txt", "\n".join(train) + "\n")
    _write_text(out / "val.txt", "\n".join(val) + "\n")
    classes_train = {c for i in train for c in labels[i]}
    classes_val = {c for i in val for c in labels[i]}
    info = {"images": len(ids), "train": len(train), "val": len(val),
            "classes_train": len(classes_train), "classes_val": len(classes_val),
            "val_classes_not_in_train": sorted(dataset.class_names[c]
                                               for c in classes_val - classes_train)}
    _write_text(out / "data.json", json.dumps(info, indent=1) + "\n")
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="output folder (outside the repo)")
    p.add_argument("--assets", type=Path,
                   default=Path(os.environ.get("LOUPE_ASSETS", REPO.parent / "shared/assets")))
    p.add_argument("--stages", nargs="+", default=["prepare", "train", "maps", "evaluate"])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--head-lr-mult", type=float, default=40.0)
    p.add_argument("--size", type=int, default=320, help="maps: images resized to SIZE^2")
    p.add_argument("--sampling-images", type=int, default=32,
                   help="first N train images for SmoothGrad, IG and shuffle (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = start_runner(args)
    data = args.work / "data"
    classifier = args.work / "classifier"
    common = ["--device", "cpu", "--no-progress"]
    data_args = ["--dataset", "folder", "--root", str(data)]
    if "prepare" in args.stages:
        logger.info("data: %s", runner.timed("prepare", lambda: prepare(args.assets, data)))
    if "train" in args.stages and not (classifier / "model.pt").is_file():
        runner.loupe("train", [
            "train", *data_args, "--train-split", "train", "--val-split", "val",
            "--backbone", "mobilenet_v2", "--pretrained", "none", "--init",
            str(args.assets / "weights" / "mobilenet_v2_imagenet1k_coral.pth"),
            "--scale", "x*2-1", "--epochs", str(args.epochs), "--head-lr-mult",
            str(args.head_lr_mult), "--seed", "0",
            "--out", str(classifier), *common,
        ])
    maps = args.work / "maps"
    sampling = [m for m in args.methods if m in SAMPLING]
    subset = ["--limit", str(args.sampling_images)] if args.sampling_images else []
    if "maps" in args.stages:
        for method in args.methods:
            extra = [*subset, "--option", "chunk_size=2"] if method in sampling else []
            runner.loupe(f"maps/{method}", [
                "maps", *data_args, "--split", "train", "--model", str(classifier),
                "--method", method, "--size", str(args.size), "--out", str(maps / method),
                *extra, *common,
            ])
    if "evaluate" in args.stages:
        others = [m for m in args.methods if m not in sampling]
        runs = {"evaluate-101": (others, []), f"evaluate-{args.sampling_images}": (
            args.methods, subset)} if sampling and subset else {"evaluate": (args.methods, [])}
        for name, (methods, limit) in runs.items():
            runner.loupe(name, [
                "evaluate", "--maps", *(str(maps / m) for m in methods), "--names", *methods,
                *data_args, "--split", "train", *limit, "--out", str(args.work / name),
                *common,
            ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
