"""``loupe train``: train a multi-label classifier on image-level labels (the WSSS recipe)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli.args import (
    add_command,
    add_recipe_arguments,
    add_training_data_arguments,
    run_training,
)
from loupe.cli.values import fraction, positive_int

DESCRIPTION = """\
Train a multi-label classifier on image-level labels with the WSSS recipe (IRN/AMN: SGD, poly
schedule, a 10x learning rate on the new head, random long-side resize, crop, flip and colour
jitter). Writes OUT/model.pt, model.json, history.json and a checkpoint to --resume from; the
classifier is ready for loupe maps --model OUT. Runs under torchrun (docs/distributed.md)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "train", help="train a multi-label classifier (image-level labels)",
        description=DESCRIPTION,
        examples=[
            "loupe train --dataset voc --root VOCdevkit --backbone resnet50 --out runs/cls",
            "loupe train --dataset folder --root coco128-folder --backbone mobilenet_v2 "
            "--pretrained none --init mobilenet_v2_imagenet1k_coral.pth --scale 'x*2-1' "
            "--out runs/cls-coco",
            "loupe train --dataset synthetic --backbone small --pretrained none --epochs 2 "
            "--out runs/cls-synthetic",
        ],
    )
    add_training_data_arguments(p)
    group = p.add_argument_group("model")
    group.add_argument("--backbone", default="resnet50",
                       help="torchvision model name, a small CPU net ('small', 'small-s4', "
                       "'small-s4-local', 'small-s4-local2': docs/synthetic-data.md) or "
                       "timm:NAME")
    group.add_argument("--head", default="auto", choices=("auto", "irn", "linear"),
                       help="irn: stride-1 last stage, GAP, bias-free linear (ResNet default)")
    group.add_argument("--output-stride", type=int, default=16, choices=(16, 32),
                       help="output stride of a ResNet backbone")
    group.add_argument("--pool", default="gap", choices=("gap", "gmp"),
                       help="global average (gap) or max (gmp) pooling before the linear "
                       "layer: the CAM paper's comparison (default gap)")
    group.add_argument("--pretrained", default="imagenet", choices=("imagenet", "none"),
                       help="ImageNet backbone weights (torchvision) or none")
    group.add_argument("--init", type=Path, help="local state dict for the backbone")
    group.add_argument("--eval-size", type=positive_int,
                       help="validation input side (default: --crop)")
    group.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=None,
                       help="fixed BatchNorm statistics (default: on for trained weights)")
    group.add_argument("--freeze-stem", action=argparse.BooleanOptionalAction, default=None,
                       help="freeze a ResNet's conv1/bn1/layer1 (default: on for trained weights)")
    group.add_argument("--shuffle-augment", type=fraction, default=0.0, metavar="P",
                       help="tile-shuffle each augmented training image with probability P, "
                       "as shuffle saliency does (grids 2, 3, 4, cyclic offset)")
    add_recipe_arguments(p, epochs=5, lr=0.01)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loupe.training.classifier import ClassifierConfig, train_classifier

    extra = {"head": args.head, "output_stride": args.output_stride, "pool": args.pool,
             "eval_size": args.eval_size, "freeze_bn": args.freeze_bn,
             "freeze_stem": args.freeze_stem, "shuffle_augment": args.shuffle_augment}
    return run_training(args, ClassifierConfig, train_classifier, extra, ("val_map", "val mAP"))
