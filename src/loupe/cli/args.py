"""Argument groups that several subcommands share, the help layout, and turning parsed
arguments into library objects: the data set of ``maps``/``masks``/``evaluate``, the training
data and recipe of ``train`` and ``train-seg``, the model and the map method of ``explain`` and
``maps``, and the run options (the checks of numeric values are in :mod:`loupe.cli.values`). No
subcommand imports another; they all import this. Nothing here imports torch at module level
(``loupe --help`` answers at once): the library is imported inside the functions that build
its objects."""

from __future__ import annotations

import argparse
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from loupe.cli import UserError
from loupe.cli.catalog import (
    ID_HALVES,
    METHOD_NAMES,
    SPEC_KINDS,
    SPLIT_KINDS,
    SYNTHETIC_SEED,
    SYNTHETIC_SIZE,
    SYNTHETIC_TRAIN,
    SYNTHETIC_VAL,
)
from loupe.cli.values import (
    Ascending,
    HueJitter,
    NonDecreasing,
    device_name,
    fraction,
    non_negative_float,
    non_negative_int,
    open_fraction,
    output_folder,
    positive_float,
    positive_int,
    swept_threshold,
)

if TYPE_CHECKING:
    from loupe.data.spec import DatasetSpec
    from loupe.mapsets.generate import MapsConfig
    from loupe.models.preprocessing import Preprocessing, PreprocessingOptions

T = TypeVar("T")
logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- shared options

DEVICE_HELP = ("auto (cuda if available, else cpu), cpu, cuda or cuda:N; under torchrun cuda "
               "means cuda:LOCAL_RANK")
NO_PROGRESS_HELP = "no progress bars"
LABEL_OFFSET_HELP = ("classifier output k is class k + OFFSET of the class names (1 when "
                     "class 0 is a background the classifier does not predict)")
TARGET_LAYER_HELP = "layer of the CAM methods (default: found automatically)"
CLASS_MAP_HELP = ("data-set class -> classifier classes: 'coco_to_imagenet' or a JSON file "
                  "{name: [indices]}")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and example epilogs as written; each option's default appended as
    "(default: X)" unless its help already says it or it has none (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default == []
                or default is argparse.SUPPRESS or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def add_command(subparsers: argparse._SubParsersAction, name: str, *, help: str,
                description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A subcommand's parser: ``description`` and ``examples`` (shell lines, shown at the end
    of its ``--help``, wrapped with line continuations) as written, option defaults shown."""
    epilog = "examples:\n" + "\n".join(wrap_command(line) for line in examples)
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=HelpFormatter)


def wrap_command(line: str, width: int = 92) -> str:
    """A shell command indented by two spaces and broken before ``--options`` into lines of at
    most ``width`` characters, joined by `` \\`` continuations (same command for the shell)."""
    words = shlex.split(line, posix=False)  # quotes stay part of their words
    lines = ["  " + words[0]]
    for word in words[1:]:
        if word.startswith("--") and len(lines[-1]) + 1 + len(word) > width - 2:
            lines.append("      " + word)
        else:
            lines[-1] += " " + word
    return " \\\n".join(lines)


def add_device_argument(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    group.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)


def add_run_arguments(p: argparse.ArgumentParser, *, out_help: str, workers: bool = True
                      ) -> argparse._ArgumentGroup:
    """The "run" group: ``--out``, ``--device``, ``--workers`` (optional), ``--no-progress``;
    returned so that a command adds its own run options to it."""
    group = p.add_argument_group("run")
    group.add_argument("--out", required=True, type=output_folder, help=out_help)
    add_device_argument(group)
    if workers:
        group.add_argument("--workers", type=non_negative_int, default=0,
                           help="DataLoader worker processes")
    group.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    return group


# --------------------------------------------------------------------------- data sets


def add_dataset_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The data set of ``maps``, ``masks`` and ``evaluate`` (a :class:`DatasetSpec`)."""
    group = p.add_argument_group("data set")
    group.add_argument("--dataset", required=required, choices=SPEC_KINDS,
                       help="data-set kind")
    group.add_argument("--root", help="data set folder (not for synthetic)")
    group.add_argument("--split", help="split name (default: the kind's default; synthetic: "
                       "train)")
    group.add_argument("--split-file", help="explicit id list (voc, voc-boxes), e.g. IRN's "
                       "voc12/train.txt")
    group.add_argument("--labels-file", help="image-level labels (voc, folder): JSON {id: "
                       "[class indices]} or .npz {id: float32[20]}; a pickled .npy such as "
                       "IRN's cls_labels.npy only with --trust-pickle")
    group.add_argument("--trust-pickle", action="store_true",
                       help="allow a pickled --labels-file .npy (unpickling runs code from the "
                       "file: trusted files only); it is converted once to the safe .npz "
                       "beside it, to be named next time instead")
    group.add_argument("--class-names", help="class names file, or 'coco' (yolo folders "
                       "without data.yaml, e.g. coco128-seg; ilsvrc: a synset file)")
    group.add_argument("--split-by-id", choices=ID_HALVES, default="all",
                       help="dev: the first n//2 image ids in sorted order; test: the rest; "
                       "all: every image")
    group.add_argument("--limit", type=non_negative_int, default=0,
                       help="only the first N images of the --split-by-id half (0: all)")
    add_synthetic_arguments(group, seed=True)


def add_synthetic_arguments(group: argparse._ArgumentGroup, *, seed: bool) -> None:
    """``--synthetic-train/-val/-size`` (and ``--synthetic-seed``): the synthetic set's splits."""
    group.add_argument("--synthetic-train", type=positive_int, default=SYNTHETIC_TRAIN,
                       help="synthetic training images, as loupe train makes them")
    group.add_argument("--synthetic-val", type=positive_int, default=SYNTHETIC_VAL,
                       help="synthetic validation images")
    group.add_argument("--synthetic-size", type=positive_int, default=SYNTHETIC_SIZE,
                       help="synthetic image side")
    if seed:
        group.add_argument("--synthetic-seed", type=non_negative_int, default=SYNTHETIC_SEED,
                           help="the --seed the classifier was trained with")


def dataset_spec(args: argparse.Namespace) -> DatasetSpec:
    """The :class:`DatasetSpec` of parsed data-set arguments (a pickled ``--labels-file`` is
    converted first with ``--trust-pickle``, refused without)."""
    from loupe.data.spec import DatasetSpec

    return DatasetSpec(
        kind=args.dataset, root=args.root, split=args.split, split_file=args.split_file,
        labels_file=safe_labels_file(args.labels_file, args.trust_pickle),
        class_names=args.class_names, limit=args.limit,
        synthetic_train=args.synthetic_train, synthetic_val=args.synthetic_val,
        synthetic_size=args.synthetic_size, synthetic_seed=args.synthetic_seed,
        split_by_id=args.split_by_id,
    )


def safe_labels_file(path: str | None, trust_pickle: bool) -> str | None:
    """``path``, or with ``trust_pickle`` for a pickled ``.npy`` (IRN's ``cls_labels.npy``) the
    safe ``.npz`` it is converted to, beside it (a warning names it for next time). Without
    ``trust_pickle`` a pickled file is refused when the data set opens it."""
    from loupe.data.voc import convert_pickled_labels, is_pickled_npy

    if path is None or not trust_pickle or not is_pickled_npy(Path(path)):
        return path
    source = Path(path)
    target = source.with_suffix(".npz")
    try:
        convert_pickled_labels(source, target)
    except OSError as error:
        raise UserError(f"--trust-pickle: cannot write the safe form {target} beside "
                        f"{source} ({error.strerror or error}); copy {source} to a folder "
                        "you can write to") from error
    logger.warning("--trust-pickle: unpickled %s and saved its safe form %s; give "
                   "--labels-file %s from now on (no --trust-pickle needed)",
                   source, target, target)
    return str(target)


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
    group.add_argument("--num-classes", type=positive_int, help="outputs of a state-dict model "
                       "(default: read from the file)")
    group.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of --weights random")
    group.add_argument("--patch", metavar="PY_FILE:FUNC",
                       help="call FUNC(model) from PY_FILE after loading (trusted code only)")
    add_normalization_arguments(group)
    return group


def add_normalization_arguments(group: argparse._ArgumentGroup) -> None:
    """``--mean``, ``--std`` and ``--scale``: how RGB in [0, 1] is normalised for the model."""
    group.add_argument("--mean", type=fraction, nargs=3, metavar=("R", "G", "B"),
                       help="input mean of RGB in [0, 1] (default: the weights' or ImageNet's)")
    group.add_argument("--std", type=positive_float, nargs=3, metavar=("R", "G", "B"),
                       help="input std of RGB in [0, 1] (default: the weights' or ImageNet's)")
    group.add_argument("--scale", help="a named rule instead of --mean/--std: 'x*2-1' (RGB in "
                       "[0, 1] then x*2-1, TF-slim models such as the Coral MobileNetV2)")


def preprocessing_options(args: argparse.Namespace) -> PreprocessingOptions:
    """The preprocessing options given on the command line (``--size``/``--resize`` where the
    command has them)."""
    from loupe.models.preprocessing import PreprocessingOptions

    return PreprocessingOptions(
        size=getattr(args, "size", None), resize=getattr(args, "resize", None),
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
        scale=args.scale,
    )


def add_method_arguments(group: argparse._ArgumentGroup) -> None:
    """``--method SPEC``, ``--option KEY=VALUE`` and ``--target-layer``."""
    group.add_argument("--method", default="gradcam", metavar="SPEC",
                       help="a method with optional options, NAME[:KEY=VALUE,...], e.g. "
                       "'shuffle:n_shuffles=16,grids=(2,3,4)'; NAME one of "
                       + ", ".join(METHOD_NAMES) + " (see loupe methods)")
    group.add_argument("--option", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="method option, e.g. n_shuffles=8 grids=2,3 seed=0 (ints, floats, "
                       "bools, none, tuples); merges with the spec's options")
    group.add_argument("--target-layer", help=TARGET_LAYER_HELP)


def method_options(spec: str, pairs: Sequence[str]) -> tuple[str, dict[str, object]]:
    """The method name and options of ``--method SPEC`` and ``--option KEY=VALUE`` pairs,
    parsed and checked against the method's parameters (an option in both is an error)."""
    from loupe.method_specs import parse_value, resolve_method

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--option {pair!r} must be KEY=VALUE, e.g. n_shuffles=8")
        options[key] = parse_value(value.strip())
    try:
        return resolve_method(spec, options, "--option")
    except ValueError as error:
        raise UserError(str(error)) from None


# --------------------------------------------------------------------------- maps and evaluation


def add_map_options(group: argparse._ArgumentGroup, run: argparse._ArgumentGroup) -> None:
    """The options of ``loupe maps`` that ``compare`` shares: ``--scales --flip --class-map
    --label-offset`` into ``group``, ``--size --max-side --batch-size --amp`` into the ``run``
    group."""
    group.add_argument("--scales", type=positive_float, nargs="+", default=[1.0],
                       help="input scales whose maps are summed (IRN: 1.0 0.5 1.5 2.0)")
    group.add_argument("--flip", action="store_true",
                       help="add the maps of the horizontally flipped input (IRN)")
    group.add_argument("--class-map", help=CLASS_MAP_HELP)
    group.add_argument("--label-offset", type=non_negative_int, help=LABEL_OFFSET_HELP
                       + " (default: model.json's, or inferred from the class counts)")
    run.add_argument("--size", type=positive_int, help="resize images to SIZE x SIZE for "
                     "the model, maps resized back (default: each image at its own size)")
    run.add_argument("--max-side", type=non_negative_int, default=1024, help="explain images "
                     "whose longer side is larger at this side, maps upsampled back (0: no limit)")
    run.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    run.add_argument("--amp", action="store_true", help="run the model under autocast")


def maps_config(args: argparse.Namespace, method: str, options: dict[str, object]
                ) -> MapsConfig:
    """The :class:`~loupe.mapsets.MapsConfig` of parsed ``maps`` (or ``compare``) arguments
    for one method; a UserError for ``--seed`` without ``--weights random``."""
    from loupe.mapsets.generate import MapsConfig

    if args.weights is None and args.seed != 0:
        raise UserError("--seed only applies to --weights random")
    return MapsConfig(
        dataset=dataset_spec(args), out=args.out, model=args.model, weights=args.weights,
        method=method, options=options, target_layer=args.target_layer,
        scales=tuple(args.scales), flip=args.flip, topk=getattr(args, "topk", None),
        class_map=args.class_map, label_offset=args.label_offset, size=args.size,
        max_side=args.max_side or None, batch_size=args.batch_size, workers=args.workers,
        amp=args.amp,
        num_classes=args.num_classes, seed=args.seed,
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
        scale=args.scale, patch=args.patch, progress=not args.no_progress,
    )


def add_bootstrap_options(group: argparse._ArgumentGroup) -> None:
    """``--bootstrap``, ``--bootstrap-seed`` and ``--level``: the paired bootstrap of the images
    (``evaluate``, ``compare``, ``faithfulness``)."""
    group.add_argument("--bootstrap", type=non_negative_int, default=1000,
                       help="bootstrap resamples of the images (0: none)")
    group.add_argument("--bootstrap-seed", type=non_negative_int, default=0,
                       help="seed of the bootstrap resampling")
    group.add_argument("--level", type=open_fraction, default=0.95,
                       help="level of the bootstrap intervals, in (0, 1)")


def add_evaluation_options(p: argparse.ArgumentParser, *, class_map: bool = True
                           ) -> argparse._ArgumentGroup:
    """The "evaluation" group of ``evaluate`` and ``compare`` (``--class-map`` only with
    ``class_map``: ``compare`` has it among its map options); returned for more options."""
    group = p.add_argument_group("evaluation")
    group.add_argument("--fixed", type=swept_threshold, nargs="+",
                       default=[0.1, 0.15, 0.2, 0.3], help="thresholds whose mIoU is reported "
                       "(of the swept 0, 0.05, ..., 0.95)")
    group.add_argument("--spread-range", type=fraction, nargs=2, default=[0.1, 0.6],
                       metavar=("LO", "HI"), action=Ascending,
                       help="threshold range of the spread, 0 <= LO < HI <= 1")
    add_bootstrap_options(group)
    group.add_argument("--ignore-classes", nargs="+", action="extend", default=[],
                       metavar="NAME", help="data-set classes left out of the segmentation "
                       "scores (sweep, per-class table, mean, bootstrap): their ground-truth "
                       "pixels are not counted (as 255), their maps are not used and their "
                       "labels in --masks files count as background; with evaluate --boxes, CAM's "
                       "ILSVRC errors leave them out too, the other box metrics are unaffected")
    if class_map:
        group.add_argument("--class-map", help=CLASS_MAP_HELP + "; every class without a "
                           "counterpart is ignored as with --ignore-classes (combines with it)")
    return group


# --------------------------------------------------------------------------- training


def add_training_data_arguments(p: argparse.ArgumentParser) -> None:
    """Data set, splits and the synthetic set's sizes of ``train`` and ``train-seg``."""
    group = p.add_argument_group("data")
    group.add_argument("--dataset", required=True, choices=SPLIT_KINDS, help="data-set kind")
    group.add_argument("--root", help="data set folder (not for synthetic)")
    group.add_argument("--train-split", default="train", help="training split")
    group.add_argument("--val-split", default="val", help="validation split; 'none' to skip")
    group.add_argument("--data-option", nargs="+", action="extend", default=[],
                       metavar="KEY=VALUE", help="data set option, e.g. data_yaml=FILE or "
                       "names=cat,dog (a comma makes a list)")
    add_synthetic_arguments(group, seed=False)


def add_recipe_arguments(p: argparse.ArgumentParser, *, epochs: int, lr: float) -> None:
    """Optimisation, augmentation, preprocessing and run options of the training recipe
    (:class:`loupe.training.Recipe`)."""
    group = p.add_argument_group("optimisation (defaults: the WSSS recipe)")
    group.add_argument("--epochs", type=positive_int, default=epochs, help="training epochs")
    group.add_argument("--batch-size", type=positive_int, default=16, help="images per batch")
    group.add_argument("--lr", type=positive_float, default=lr, help="backbone learning rate")
    group.add_argument("--head-lr-mult", type=positive_float, default=10.0,
                       help="learning-rate multiplier of the new head")
    group.add_argument("--momentum", type=fraction, default=0.9, help="SGD momentum")
    group.add_argument("--weight-decay", type=non_negative_float, default=1e-4,
                       help="SGD weight decay")
    group.add_argument("--poly-power", type=non_negative_float, default=0.9,
                       help="power of the poly learning-rate schedule")
    group.add_argument("--max-steps-per-epoch", type=positive_int,
                       help="cut epochs short (default: whole epochs)")
    group = p.add_argument_group("augmentation")
    group.add_argument("--resize-long", type=positive_int, nargs=2, default=[320, 640],
                       metavar=("MIN", "MAX"), action=NonDecreasing,
                       help="random long side between MIN and MAX")
    group.add_argument("--no-resize", action="store_true", help="keep the image size")
    group.add_argument("--crop", type=non_negative_int, default=512,
                       help="random crop side; 0 = no crop")
    group.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    group.add_argument("--jitter", type=non_negative_float, nargs=4, default=[0.3, 0.3, 0.3, 0.1],
                       metavar=("B", "C", "S", "H"), action=HueJitter,
                       help="colour jitter: brightness contrast saturation hue (H <= 0.5)")
    add_normalization_arguments(p.add_argument_group("preprocessing"))
    add_training_run_arguments(p, seed_help="seed of the run (initialisation, data order, "
                               "augmentation)")


def add_training_run_arguments(p: argparse.ArgumentParser, *, seed_help: str) -> None:
    """The "run" group of a training command: :func:`add_run_arguments`, ``--resume``,
    ``--no-amp`` and ``--seed``."""
    group = add_run_arguments(p, out_help="run folder")
    group.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt (epoch, optimizer, schedule)")
    group.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    group.add_argument("--seed", type=non_negative_int, default=0, help=seed_help)


def recipe_preprocessing(args: argparse.Namespace) -> Preprocessing:
    """The normalisation ``loupe train`` takes: a named ``--scale`` rule, or ``--mean`` with a
    positive ``--std``, or ImageNet's (a UserError on conflicts)."""
    from loupe.models.preprocessing import Preprocessing

    if args.scale and (args.mean or args.std):
        raise UserError("--scale and --mean/--std are alternatives; give one")
    if args.scale:
        return Preprocessing.from_scale(args.scale)
    if (args.mean is None) != (args.std is None):
        raise UserError("--mean and --std go together")
    if args.mean:
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
    return report_training(path, score)


def report_training(path: Path, score: tuple[str, str]) -> int:
    """Print ``model: PATH, <words> <score>`` from the last epoch of the run's
    ``history.json`` (``score`` = key, words), on rank 0 only; returns 0."""
    from loupe.distributed import launched_rank
    from loupe.io import read_json
    from loupe.training.checkpoints import HISTORY_FILE

    history = read_json(path.parent / HISTORY_FILE, "training history")
    last = history[-1] if history else {}
    key, words = score
    found = f", {words} {last[key]:.4f}" if key in last else ""
    if launched_rank() == 0:
        print(f"model: {path}{found}")
    return 0


def recipe_values(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`loupe.training.Recipe` fields of parsed ``train``/``train-seg`` arguments."""
    from loupe.data.spec import SyntheticSplits

    if args.dataset != "synthetic" and not args.root:
        raise UserError(f"--root is required for --dataset {args.dataset}")
    if args.init is not None and not args.init.is_file():
        raise UserError(f"--init {args.init}: file not found")
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
