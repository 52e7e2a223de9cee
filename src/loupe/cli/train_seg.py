"""``loupe train-seg``: train DeepLabV3 on pseudo-masks, evaluate on ground-truth masks."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.args import add_recipe_arguments, add_training_data_arguments, run_training


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-seg", help="train DeepLabV3 on pseudo-mask PNGs",
                              description=__doc__)
    p.add_argument("--masks", required=True, type=Path,
                   help="folder of pseudo-masks <id>.png of the training split (255 = ignore)")
    add_training_data_arguments(p)
    group = p.add_argument_group("model")
    group.add_argument("--backbone", default="resnet50",
                       choices=("resnet50", "mobilenet_v3_large"))
    group.add_argument("--pretrained", default="imagenet", choices=("imagenet", "none"),
                       help="ImageNet backbone weights (torchvision download) or none")
    group.add_argument("--init", type=Path,
                       help="local ImageNet classification state dict of the backbone")
    group.add_argument("--freeze-bn", action="store_true", help="fixed BatchNorm statistics")
    group.add_argument("--bn-momentum", type=float,
                       help="BatchNorm momentum for all layers (MobileNetV3's 0.01 is slow for "
                       "short runs from scratch; e.g. 0.1)")
    group.add_argument("--precise-bn", type=int, default=0, metavar="BATCHES",
                       help="recompute BatchNorm statistics on this many training batches "
                       "after each epoch (default 0: off)")
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
