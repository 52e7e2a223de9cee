"""``loupe train``: train a multi-label classifier on image-level labels (the WSSS recipe)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli.args import add_recipe_arguments, add_training_data_arguments, run_training


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a multi-label classifier (image-level labels)",
                              description=__doc__)
    add_training_data_arguments(p)
    group = p.add_argument_group("model")
    group.add_argument("--backbone", default="resnet50",
                       help="torchvision model name, 'small' (CPU demo net) or timm:NAME")
    group.add_argument("--head", default="auto", choices=("auto", "irn", "linear"),
                       help="irn: stride-1 last stage, GAP, bias-free linear (ResNet default)")
    group.add_argument("--output-stride", type=int, default=16, choices=(16, 32))
    group.add_argument("--pool", default="gap", choices=("gap", "gmp"),
                       help="global average (gap) or max (gmp) pooling before the linear "
                       "layer: the CAM paper's comparison (default gap)")
    group.add_argument("--pretrained", default="imagenet", choices=("imagenet", "none"))
    group.add_argument("--init", type=Path, help="local state dict for the backbone")
    group.add_argument("--eval-size", type=int, help="validation input side (default: crop)")
    group.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=None,
                       help="fixed BatchNorm statistics (default: on for trained weights)")
    group.add_argument("--freeze-stem", action=argparse.BooleanOptionalAction, default=None,
                       help="freeze a ResNet's conv1/bn1/layer1 (default: on for trained weights)")
    add_recipe_arguments(p, epochs=5, lr=0.01)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loupe.training.classifier import ClassifierConfig, train_classifier

    extra = {"head": args.head, "output_stride": args.output_stride, "pool": args.pool,
             "eval_size": args.eval_size, "freeze_bn": args.freeze_bn,
             "freeze_stem": args.freeze_stem}
    return run_training(args, ClassifierConfig, train_classifier, extra, ("val_map", "val mAP"))
