"""Argument groups that several subcommands share, and turning them into library objects:
the data set of ``maps``/``masks``/``evaluate``, the training data and recipe of ``train`` and
``train-seg``, the model and the map method of ``explain`` and ``maps``, and the run options.
No subcommand imports another; they all import this."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from loupe.cli import UserError
from loupe.data.spec import SPEC_KINDS, SPLIT_KINDS, DatasetSpec, SyntheticSplits
from loupe.distributed import launched_rank
from loupe.io import read_json
from loupe.models.preprocessing import Preprocessing, PreprocessingOptions
from loupe.registry import get_method, list_methods
from loupe.training.checkpoints import HISTORY_FILE

T = TypeVar("T")

# --------------------------------------------------------------------------- run


def add_run_arguments(p: argparse.ArgumentParser, *, out_help: str, workers: bool = True,
                      device_default: str | None = None) -> argparse._ArgumentGroup:
    """The "run" group: ``--out``, ``--device``, ``--workers`` (optional), ``--no-progress``;
    returned so that a command adds its own run options to it."""
    group = p.add_argument_group("run")
    group.add_argument("--out", required=True, type=Path, help=out_help)
    device_help = "cpu, cuda or cuda:N (default: cuda if available; under torchrun cuda " \
                  "means cuda:LOCAL_RANK)"
    group.add_argument("--device", default=device_default,
                       help=f"auto, {device_help}" if device_default else device_help)
    if workers:
        group.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    return group


# --------------------------------------------------------------------------- data sets


def add_dataset_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The data set of ``maps``, ``masks`` and ``evaluate`` (a :class:`DatasetSpec`)."""
    group = p.add_argument_group("data set")
    group.add_argument("--dataset", required=required, choices=SPEC_KINDS)
    group.add_argument("--root", help="data set folder (not for synthetic)")
    group.add_argument("--split", help="split name (default: the kind's default; synthetic: "
                       "train)")
    group.add_argument("--split-file", help="explicit id list (voc, voc-boxes), e.g. IRN's "
                       "voc12/train.txt")
    group.add_argument("--labels-file", help="image-level labels (voc: cls_labels.npy or JSON; "
                       "folder: JSON)")
    group.add_argument("--class-names", help="class names file, or 'coco' (yolo folders "
                       "without data.yaml, e.g. coco128-seg)")
    group.add_argument("--limit", type=int, default=0, help="only the first N images")
    defaults = SyntheticSplits()
    group.add_argument("--synthetic-train", type=int, default=defaults.n_train,
                       help=f"synthetic train images (default {defaults.n_train}, as loupe train)")
    group.add_argument("--synthetic-val", type=int, default=defaults.n_val)
    group.add_argument("--synthetic-size", type=int, default=defaults.size)
    group.add_argument("--synthetic-seed", type=int, default=defaults.seed,
                       help="the --seed the classifier was trained with (default 0)")


def dataset_spec(args: argparse.Namespace) -> DatasetSpec:
    """The :class:`DatasetSpec` of parsed data-set arguments."""
    return DatasetSpec(
        kind=args.dataset, root=args.root, split=args.split, split_file=args.split_file,
        labels_file=args.labels_file, class_names=args.class_names, limit=args.limit,
        synthetic_train=args.synthetic_train, synthetic_val=args.synthetic_val,
        synthetic_size=args.synthetic_size, synthetic_seed=args.synthetic_seed,
    )


# --------------------------------------------------------------------------- models and methods


def add_model_arguments(p: argparse.ArgumentParser, *, runs: bool) -> argparse._ArgumentGroup:
    """The classifier (:func:`loupe.models.load_classifier`): ``--model``, ``--weights`` and the
    options of torchvision weights. With ``runs`` a loupe run folder may be named and
    ``--weights`` is optional; without, ``--weights`` is required. Returned for more options."""
    group = p.add_argument_group("model")
    if runs:
        group.add_argument("--model", required=True,
                           help="a loupe training run (folder or model.pt with model.json), or "
                           "a torchvision model name with --weights")
    else:
        group.add_argument("--model", required=True, help="torchvision model name, e.g. resnet50")
    group.add_argument("--weights", required=not runs,
                       help="torchvision weight name (IMAGENET1K_V1, DEFAULT), a state-dict "
                       "file, or 'random'")
    group.add_argument("--num-classes", type=int, help="outputs of a state-dict model (default: "
                       "read from the file)")
    group.add_argument("--seed", type=int, default=0, help="seed of --weights random (default 0)")
    group.add_argument("--patch", metavar="PY_FILE:FUNC",
                       help="call FUNC(model) from PY_FILE after loading (trusted code only)")
    group.add_argument("--mean", type=float, nargs=3, help="input mean of RGB in [0, 1]")
    group.add_argument("--std", type=float, nargs=3, help="input std of RGB in [0, 1]")
    group.add_argument("--scale", help="affine map of RGB in [0, 1] instead of --mean/--std, "
                       "e.g. 'x*2-1'")
    return group


def preprocessing_options(args: argparse.Namespace) -> PreprocessingOptions:
    """The preprocessing options given on the command line (``--size``/``--resize`` where the
    command has them)."""
    return PreprocessingOptions(
        size=getattr(args, "size", None), resize=getattr(args, "resize", None),
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
        scale=args.scale,
    )


def add_method_arguments(group: argparse._ArgumentGroup) -> None:
    """``--method``, ``--option KEY=VALUE`` and ``--target-layer``."""
    group.add_argument("--method", default="gradcam", choices=list_methods())
    group.add_argument("--option", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="method option, e.g. n_shuffles=8 grids=2,3 seed=0 (ints, floats, "
                       "bools, lists)")
    group.add_argument("--target-layer", help="layer for CAM methods (default: found "
                       "automatically)")


def parse_value(text: str) -> object:
    """``"8"`` -> 8, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"none"`` -> None, ``"2,3"`` -> (2, 3);
    anything else stays a string."""
    if "," in text:
        return tuple(parse_value(part) for part in text.split(",") if part != "")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def method_options(method: str, pairs: Sequence[str]) -> dict[str, object]:
    """``--option KEY=VALUE`` pairs parsed and checked against the method's parameters."""
    function = get_method(method).function
    params = list(inspect.signature(function).parameters.values())[1:]
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--option {pair!r} must be KEY=VALUE, e.g. n_shuffles=8")
        if not open_ended and key not in known:
            choices = ", ".join(known) or "none"
            raise UserError(f"method {method!r} has no option {key!r} (its options: {choices})")
        options[key] = parse_value(value.strip())
    return options


# --------------------------------------------------------------------------- training


def add_training_data_arguments(p: argparse.ArgumentParser) -> None:
    """Data set, splits and the synthetic set's sizes of ``train`` and ``train-seg``."""
    group = p.add_argument_group("data")
    group.add_argument("--dataset", required=True, choices=SPLIT_KINDS)
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
    """Optimisation, augmentation, preprocessing and run options of the training recipe
    (:class:`loupe.training.Recipe`)."""
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
    group = add_run_arguments(p, out_help="run folder", device_default="auto")
    group.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt (epoch, optimizer, schedule)")
    group.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    group.add_argument("--seed", type=int, default=0)


def recipe_preprocessing(args: argparse.Namespace) -> Preprocessing:
    """The normalisation ``loupe train`` takes: a named ``--scale`` rule, or ``--mean`` with a
    positive ``--std``, or ImageNet's (a UserError on conflicts)."""
    if args.scale and (args.mean or args.std):
        raise UserError("--scale and --mean/--std are alternatives; give one")
    if args.scale:
        return Preprocessing.from_scale(args.scale)
    if (args.mean is None) != (args.std is None):
        raise UserError("--mean and --std go together")
    if args.mean:
        if any(s <= 0 for s in args.std):
            raise UserError(f"--std values must be positive, got {args.std}")
        return Preprocessing(mean=tuple(args.mean), std=tuple(args.std))
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


def run_training(args: argparse.Namespace, config_type: type[T], train: Callable[[T], Path],
                 extra: dict[str, Any], score: tuple[str, str]) -> int:
    """Train the ``config_type`` (a :class:`loupe.training.Recipe`) of the recipe arguments
    and ``extra``; then ``model: PATH, <words> <score>`` from the last epoch of the run's
    ``history.json`` (``score`` = key, words), on rank 0 only (one line per run, not per
    ``torchrun`` process)."""
    values = {**recipe_values(args), **extra}
    names = {f.name for f in fields(config_type)}  # type: ignore[arg-type]
    path = train(config_type(**{k: v for k, v in values.items() if k in names}))
    history = read_json(path.parent / HISTORY_FILE, "training history")
    last = history[-1] if history else {}
    key, words = score
    found = f", {words} {last[key]:.4f}" if key in last else ""
    if launched_rank() == 0:
        print(f"model: {path}{found}")
    return 0


def recipe_values(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`loupe.training.Recipe` fields of parsed ``train``/``train-seg`` arguments."""
    if args.dataset != "synthetic" and not args.root:
        raise UserError(f"--root is required for --dataset {args.dataset}")
    if args.init is not None and not args.init.is_file():
        raise UserError(f"--init {args.init}: file not found")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.crop < 0:
        raise UserError("--crop must be >= 0 (0 = no crop)")
    preprocessing = recipe_preprocessing(args)
    return {
        "dataset": args.dataset, "root": args.root, "train_split": args.train_split,
        "data_options": data_options(args.data_option),
        "val_split": None if args.val_split.lower() == "none" else args.val_split,
        "synthetic": SyntheticSplits(args.synthetic_train, args.synthetic_val,
                                     args.synthetic_size, args.seed),
        "backbone": args.backbone, "pretrained": args.pretrained,
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
