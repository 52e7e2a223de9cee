"""``loupe train-amn``: train AMN, the activation manipulation network (Lee et al., CVPR 2022),
on the confident labels of a classifier's maps; the run is a model for ``loupe maps --method
amn``. The parser imports no torch: the defaults are :class:`loupe.training.amn.AMNConfig`'s
(a test holds them equal)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.args import (
    add_command,
    add_training_data_arguments,
    add_training_run_arguments,
    data_options,
    report_training,
)
from loupe.cli.values import (
    NonDecreasing,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

DESCRIPTION = """\
Train AMN (Lee, Kim and Shim, CVPR 2022: "Threshold Matters in WSSS") on the confident labels
of a classifier's maps: loupe maps --model CLASSIFIER, then loupe masks --confident FG BG
(255 = ignored). The network is the classifier's backbone with a label encoder and an ASPP
head, trained with label-smoothed per-pixel cross-entropy (background and foreground averaged
apart). Defaults are the authors' recipe: Adam, 5e-6 for the backbone and 20x for the label
encoder and ASPP, 5 epochs, batch 16, rescale 0.5-1.5, flip, crop 512, eps 0.4. Writes
OUT/model.pt, model.json, history.json and a checkpoint to --resume from; explain the run with
loupe maps --model OUT --method amn. Runs under torchrun (docs/distributed.md)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "train-amn", help="train AMN on confident labels of a classifier's maps",
        description=DESCRIPTION,
        examples=[
            "loupe train-amn --classifier runs/cls --masks runs/labels --dataset voc --root "
            "VOCdevkit --out runs/amn",
            "loupe train-amn --classifier runs/cls-synthetic --masks runs/labels-synthetic "
            "--dataset synthetic --epochs 2 --crop 64 --out runs/amn-synthetic",
        ],
    )
    p.add_argument("--classifier", required=True, type=Path,
                   help="the classifier run (loupe train) whose maps made the labels")
    p.add_argument("--masks", required=True, type=Path, help="folder of confident labels "
                   "<id>.png of the training split (loupe masks --confident FG BG)")
    add_training_data_arguments(p)
    _add_model_arguments(p)
    _add_recipe_arguments(p)
    p.set_defaults(run=run)


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("model (the backbone is the classifier's architecture)")
    group.add_argument("--pretrained", default="classifier",
                       choices=("classifier", "imagenet", "none"),
                       help="backbone start: the classifier's weights, ImageNet's (the paper; "
                       "torchvision download or --init), none")
    group.add_argument("--init", type=Path, help="local ImageNet state dict (--pretrained "
                       "imagenet offline)")
    group.add_argument("--eps", type=fraction, default=0.4,
                       help="label smoothing, in [0, 1)")
    group.add_argument("--rates", type=positive_int, nargs="+", default=[6, 12, 18, 24],
                       help="ASPP dilations")
    group.add_argument("--dropout", type=fraction, default=0.1, help="ASPP dropout")
    group.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=True,
                       help="fixed BatchNorm statistics (as the authors)")
    group.add_argument("--freeze-stem", action=argparse.BooleanOptionalAction, default=True,
                       help="freeze the first convolution and BatchNorm")


def _add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("optimisation (Adam; defaults: the authors' recipe)")
    group.add_argument("--epochs", type=positive_int, default=5, help="training epochs")
    group.add_argument("--batch-size", type=positive_int, default=16, help="images per batch")
    group.add_argument("--lr", type=positive_float, default=5e-6, help="backbone learning rate")
    group.add_argument("--head-lr-mult", type=positive_float, default=20.0,
                       help="learning-rate multiplier of the new head")
    group.add_argument("--weight-decay", type=non_negative_float, default=1e-4,
                       help="Adam weight decay")
    group.add_argument("--max-steps-per-epoch", type=positive_int,
                       help="cut epochs short (default: whole epochs)")
    group = p.add_argument_group("augmentation")
    group.add_argument("--rescale", type=positive_float, nargs=2, default=[0.5, 1.5],
                       metavar=("MIN", "MAX"), action=NonDecreasing,
                       help="random scale factor between MIN and MAX")
    group.add_argument("--crop", type=non_negative_int, default=512,
                       help="random crop side; 0 = no crop")
    group.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    add_training_run_arguments(p, seed_help="seed of the head and the data order (and the "
                               "synthetic set)")


def run(args: argparse.Namespace) -> int:
    from loupe.data.spec import SyntheticSplits
    from loupe.training.amn import AMNConfig, train_amn

    if args.dataset != "synthetic" and not args.root:
        raise UserError(f"--root is required for --dataset {args.dataset}")
    if not args.masks.is_dir():
        raise UserError(f"--masks {args.masks}: folder not found")
    if args.init is not None and not args.init.is_file():
        raise UserError(f"--init {args.init}: file not found")
    config = AMNConfig(
        classifier=str(args.classifier), masks=str(args.masks), dataset=args.dataset,
        root=args.root, train_split=args.train_split,
        val_split=None if args.val_split.lower() == "none" else args.val_split,
        data_options=data_options(args.data_option),
        synthetic=SyntheticSplits(args.synthetic_train, args.synthetic_val,
                                  args.synthetic_size, args.seed),
        pretrained=args.pretrained, init=str(args.init) if args.init else None,
        eps=args.eps, rates=tuple(args.rates), dropout=args.dropout, freeze_bn=args.freeze_bn,
        freeze_stem=args.freeze_stem, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, head_lr_mult=args.head_lr_mult, weight_decay=args.weight_decay,
        max_steps_per_epoch=args.max_steps_per_epoch, rescale=tuple(args.rescale),
        crop=args.crop or None, flip=not args.no_flip, amp=not args.no_amp,
        device=args.device, workers=args.workers, seed=args.seed, out=str(args.out),
        resume=args.resume, progress=not args.no_progress,
    )
    return report_training(train_amn(config), ("val_miou", "val mIoU"))
