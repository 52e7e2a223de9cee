"""``loupe train-amn``: train AMN, the activation manipulation network (Lee et al., CVPR 2022),
on the confident labels of a classifier's maps; the run is a model for ``loupe maps --method
amn``.

The labels come from ``loupe maps --model CLASSIFIER`` then ``loupe masks --confident FG BG``
(255 = ignored). Defaults are the authors' recipe: Adam, 5e-6 for the backbone and 20x for the
label encoder and ASPP, 5 epochs, batch 16, rescale 0.5-1.5, flip, crop 512, eps 0.4.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.args import (
    add_run_arguments,
    add_training_data_arguments,
    data_options,
    report_training,
)
from loupe.data.spec import SyntheticSplits
from loupe.models.amn import AMN_DROPOUT, AMN_RATES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-amn", help="train AMN on confident labels of a "
                              "classifier's maps", description=__doc__.splitlines()[0])
    p.add_argument("--classifier", required=True, type=Path,
                   help="the classifier run (loupe train) whose maps made the labels")
    p.add_argument("--masks", required=True, type=Path, help="folder of confident labels "
                   "<id>.png of the training split (loupe masks --confident FG BG)")
    add_training_data_arguments(p)
    group = p.add_argument_group("model (the backbone is the classifier's architecture)")
    group.add_argument("--pretrained", default="classifier",
                       choices=("classifier", "imagenet", "none"),
                       help="backbone start: the classifier's weights (default), ImageNet's "
                       "(the paper; torchvision download or --init), none")
    group.add_argument("--init", type=Path, help="local ImageNet state dict (--pretrained "
                       "imagenet offline)")
    group.add_argument("--eps", type=float, default=0.4, help="label smoothing (default 0.4)")
    group.add_argument("--rates", type=int, nargs="+", default=list(AMN_RATES),
                       help="ASPP dilations (default 6 12 18 24)")
    group.add_argument("--dropout", type=float, default=AMN_DROPOUT)
    group.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=True,
                       help="fixed BatchNorm statistics (default on, as the authors)")
    group.add_argument("--freeze-stem", action=argparse.BooleanOptionalAction, default=True,
                       help="freeze the first convolution and BatchNorm (default on)")
    group = p.add_argument_group("optimisation (defaults: the authors' recipe)")
    group.add_argument("--epochs", type=int, default=5)
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument("--lr", type=float, default=5e-6, help="backbone learning rate (Adam)")
    group.add_argument("--head-lr-mult", type=float, default=20.0,
                       help="label encoder and ASPP at lr x this (default 20: 1e-4)")
    group.add_argument("--weight-decay", type=float, default=1e-4)
    group.add_argument("--max-steps-per-epoch", type=int, help="cut epochs short")
    group = p.add_argument_group("augmentation")
    group.add_argument("--rescale", type=float, nargs=2, default=(0.5, 1.5),
                       metavar=("MIN", "MAX"), help="random scale factor (default 0.5 1.5)")
    group.add_argument("--crop", type=int, default=512, help="random crop side; 0 = no crop")
    group.add_argument("--no-flip", action="store_true")
    group = add_run_arguments(p, out_help="run folder", device_default="auto")
    group.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt (epoch, optimizer)")
    group.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the head and the data order (and the synthetic set)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loupe.training.amn import AMNConfig, train_amn

    if args.dataset != "synthetic" and not args.root:
        raise UserError(f"--root is required for --dataset {args.dataset}")
    if not args.masks.is_dir():
        raise UserError(f"--masks {args.masks}: folder not found")
    if args.init is not None and not args.init.is_file():
        raise UserError(f"--init {args.init}: file not found")
    if args.crop < 0:
        raise UserError("--crop must be >= 0 (0 = no crop)")
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
