"""``loupe train-seg``: train DeepLabV3 on pseudo-masks, evaluate on ground-truth masks."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.args import (
    add_command,
    add_recipe_arguments,
    add_training_data_arguments,
    run_training,
)
from loupe.cli.values import fraction, non_negative_int

DESCRIPTION = """\
Train DeepLabV3 on pseudo-masks (loupe masks; 255 = ignore) of the training split and evaluate
it on the ground-truth masks of the validation split, with the recipe of loupe train. Writes
OUT/model.pt, model.json and history.json (validation mIoU per epoch); loupe predict segments
new images with it."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "train-seg", help="train DeepLabV3 on pseudo-mask PNGs",
        description=DESCRIPTION,
        examples=[
            "loupe train-seg --masks runs/masks --dataset voc --root VOCdevkit --train-split "
            "train_aug --out runs/seg",
            "loupe train-seg --masks runs/masks --dataset synthetic --backbone "
            "mobilenet_v3_large --pretrained none --bn-momentum 0.1 --out runs/seg-synthetic",
        ],
    )
    p.add_argument("--masks", required=True, type=Path,
                   help="folder of pseudo-masks <id>.png of the training split (255 = ignore)")
    add_training_data_arguments(p)
    group = p.add_argument_group("model")
    group.add_argument("--backbone", default="resnet50",
                       choices=("resnet50", "mobilenet_v3_large"), help="DeepLabV3 backbone")
    group.add_argument("--pretrained", default="imagenet", choices=("imagenet", "none"),
                       help="ImageNet backbone weights (torchvision download) or none")
    group.add_argument("--init", type=Path,
                       help="local state dict for the backbone (ImageNet classification)")
    group.add_argument("--freeze-bn", action="store_true", help="fixed BatchNorm statistics")
    group.add_argument("--bn-momentum", type=fraction,
                       help="BatchNorm momentum for all layers (MobileNetV3's 0.01 is slow for "
                       "short runs from scratch; e.g. 0.1)")
    group.add_argument("--precise-bn", type=non_negative_int, default=0, metavar="BATCHES",
                       help="recompute BatchNorm statistics on this many training batches "
                       "after each epoch (0: off)")
    add_recipe_arguments(p, epochs=20, lr=0.01)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loupe.training.segmentation import SegmentationConfig, train_segmenter

    if not args.masks.is_dir():
        raise UserError(f"--masks {args.masks}: folder not found")
    extra = {"masks": str(args.masks), "freeze_bn": args.freeze_bn,
             "bn_momentum": args.bn_momentum, "precise_bn": args.precise_bn}
    return run_training(args, SegmentationConfig, train_segmenter, extra,
                        ("val_miou", "val mIoU"))
