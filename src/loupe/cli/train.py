"""``loupe train``: train a multi-label classifier on image-level labels (the WSSS recipe)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from loupe.cli import UserError
from loupe.pipeline.distributed import launched_rank
from loupe.training.common import DATASET_KINDS, SyntheticSplits
from loupe.training.transforms import Preprocessing


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Data set, splits and the synthetic set's sizes (shared with ``train-seg``)."""
    group = p.add_argument_group("data")
    group.add_argument("--dataset", required=True, choices=DATASET_KINDS)
    group.add_argument("--root", help="data set folder (not needed for synthetic)")
    group.add_argument("--train-split", default="train")
    group.add_argument("--val-split", default="val", help="validation split; 'none' to skip")
    group.add_argument("--data-option", nargs="+", action="extend", default=[],
                       metavar="KEY=VALUE", help="data set option, e.g. data_yaml=FILE or "
                       "names=cat,dog (a comma makes a list)")
    defaults = SyntheticSplits()
    group.add_argument("--synthetic-train", type=int, default=defaults.n_train,
                       help=f"synthetic training images (default {defaults.n_train})")
    group.add_argument("--synthetic-val", type=int, default=defaults.n_val,
                       help=f"synthetic validation images (default {defaults.n_val})")
    group.add_argument("--synthetic-size", type=int, default=defaults.size,
                       help=f"synthetic image side (default {defaults.size})")


def add_recipe_arguments(p: argparse.ArgumentParser, *, epochs: int, lr: float) -> None:
    """Optimisation, augmentation, preprocessing and run options (shared with ``train-seg``)."""
    group = p.add_argument_group("optimisation (defaults: the WSSS recipe)")
    group.add_argument("--epochs", type=int, default=epochs)
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument("--lr", type=float, default=lr, help="backbone learning rate")
    group.add_argument("--head-lr-mult", type=float, default=10.0,
                       help="learning-rate multiplier of the new head (default 10)")
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight-decay", type=float, default=1e-4)
    group.add_argument("--poly-power", type=float, default=0.9)
    group.add_argument("--max-steps-per-epoch", type=int, help="cut epochs short")
    group = p.add_argument_group("augmentation")
    group.add_argument("--resize-long", type=int, nargs=2, default=(320, 640),
                       metavar=("MIN", "MAX"), help="random long side (default 320 640)")
    group.add_argument("--no-resize", action="store_true", help="keep the image size")
    group.add_argument("--crop", type=int, default=512, help="random crop side; 0 = no crop")
    group.add_argument("--no-flip", action="store_true")
    group.add_argument("--jitter", type=float, nargs=4, default=(0.3, 0.3, 0.3, 0.1),
                       metavar=("B", "C", "S", "H"),
                       help="brightness contrast saturation hue (default 0.3 0.3 0.3 0.1)")
    group = p.add_argument_group("preprocessing (default: ImageNet mean/std)")
    group.add_argument("--mean", type=float, nargs=3)
    group.add_argument("--std", type=float, nargs=3)
    group.add_argument("--scale", help="a named rule instead of --mean/--std: 'x*2-1' (RGB in "
                       "[0, 1] then x*2-1, TF-slim models such as the Coral MobileNetV2)")
    group = p.add_argument_group("run")
    group.add_argument("--out", required=True, type=Path, help="run folder")
    group.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt (epoch, optimizer, schedule)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    group.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    group.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a multi-label classifier (image-level labels)",
                              description=__doc__)
    add_data_arguments(p)
    group = p.add_argument_group("model")
    group.add_argument("--backbone", default="resnet50",
                       help="torchvision model name, 'small' (CPU demo net) or timm:NAME")
    group.add_argument("--head", default="auto", choices=("auto", "irn", "linear"),
                       help="irn: stride-1 last stage, GAP, bias-free linear (ResNet default)")
    group.add_argument("--output-stride", type=int, default=16, choices=(16, 32))
    group.add_argument("--pretrained", default="imagenet", choices=("imagenet", "none"))
    group.add_argument("--init", type=Path, help="local state dict for the backbone")
    group.add_argument("--eval-size", type=int, help="validation input side (default: crop)")
    group.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=None,
                       help="fixed BatchNorm statistics (default: on for trained weights)")
    group.add_argument("--freeze-stem", action=argparse.BooleanOptionalAction, default=None,
                       help="freeze a ResNet's conv1/bn1/layer1 (default: on for trained weights)")
    add_recipe_arguments(p, epochs=5, lr=0.01)
    p.set_defaults(run=run)


def preprocessing_from(args: argparse.Namespace) -> Preprocessing:
    """The normalisation asked for on the command line (a UserError on conflicts)."""
    if args.scale and (args.mean or args.std):
        raise UserError("--scale and --mean/--std are alternatives; give one")
    if args.scale:
        return Preprocessing.from_scale(args.scale)
    if (args.mean is None) != (args.std is None):
        raise UserError("--mean and --std go together")
    if args.mean:
        if any(s <= 0 for s in args.std):
            raise UserError(f"--std values must be positive, got {args.std}")
        return Preprocessing(tuple(args.mean), tuple(args.std))
    return Preprocessing.imagenet()


def data_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> options; a value with a comma becomes a list of strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--data-option {pair!r}: expected KEY=VALUE")
        options[key] = [v for v in value.split(",") if v] if "," in value else value
    return options


def common_config(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields shared by ``train`` and ``train-seg`` from parsed arguments."""
    if args.dataset != "synthetic" and not args.root:
        raise UserError(f"--root is required for --dataset {args.dataset}")
    if args.init is not None and not args.init.is_file():
        raise UserError(f"--init {args.init}: file not found")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.crop < 0:
        raise UserError("--crop must be >= 0 (0 = no crop)")
    preprocessing = preprocessing_from(args)
    return {
        "dataset": args.dataset, "root": args.root, "train_split": args.train_split,
        "data_options": data_options(args.data_option),
        "val_split": None if args.val_split.lower() == "none" else args.val_split,
        "synthetic": SyntheticSplits(args.synthetic_train, args.synthetic_val,
                                     args.synthetic_size, args.seed),
        "init": str(args.init) if args.init else None,
        "mean": preprocessing.mean, "std": preprocessing.std,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "head_lr_mult": args.head_lr_mult, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "poly_power": args.poly_power,
        "resize_long": None if args.no_resize else tuple(args.resize_long),
        "crop": args.crop or None, "flip": not args.no_flip, "jitter": tuple(args.jitter),
        "amp": not args.no_amp, "device": args.device, "workers": args.workers,
        "seed": args.seed, "out": str(args.out), "resume": args.resume,
        "max_steps_per_epoch": args.max_steps_per_epoch, "progress": not args.no_progress,
    }


def run(args: argparse.Namespace) -> int:
    from loupe.training.classifier import ClassifierConfig, train_classifier

    values = common_config(args)
    values.update(backbone=args.backbone, head=args.head, output_stride=args.output_stride,
                  pretrained=args.pretrained, eval_size=args.eval_size,
                  freeze_bn=args.freeze_bn, freeze_stem=args.freeze_stem)
    names = {f.name for f in fields(ClassifierConfig)}
    config = ClassifierConfig(**{k: v for k, v in values.items() if k in names})
    path = train_classifier(config)
    history = json.loads((path.parent / "history.json").read_text())
    last = history[-1] if history else {}
    score = f", val mAP {last['val_map']:.4f}" if "val_map" in last else ""
    if launched_rank() == 0:  # one line per run, not per torchrun process
        print(f"model: {path}{score}")
    return 0
