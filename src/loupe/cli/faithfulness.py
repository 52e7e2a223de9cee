"""``loupe faithfulness``: how faithful each map method is to the model, on a data set or
image files (see :data:`DESCRIPTION`; the work is :mod:`loupe.faithfulness`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.args import (
    CLASS_MAP_HELP,
    LABEL_OFFSET_HELP,
    TARGET_LAYER_HELP,
    add_bootstrap_options,
    add_command,
    add_dataset_arguments,
    add_model_arguments,
    add_run_arguments,
    dataset_spec,
)
from loupe.cli.values import non_negative_int, positive_int

# The library's names, copied so that the parser imports no torch (tests/pipeline/
# test_faithfulness.py checks them against loupe.metrics.faithfulness and loupe.faithfulness).
METRIC_NAMES = ("deletion", "insertion", "road_morf", "road_lerf", "road", "average_drop",
                "increase_in_confidence", "pointing_game", "energy_pointing_game",
                "randomization")
METRIC_GROUPS = ("deletion", "insertion", "road", "confidence", "pointing_game",
                 "energy_pointing_game", "randomization")
REGION_SOURCES = ("auto", "masks", "boxes", "none")
SCORES = ("probability", "logit")

DESCRIPTION = """\
How faithful each map method is to the model, on a data set or image files. For every
--methods spec it computes the maps of each image's targets and scores them with the
faithfulness metrics: deletion and insertion AUC (Petsiuk et al. 2018), ROAD MoRF, LeRF and
their difference (Rong et al. 2022), Average Drop and Increase in Confidence (Chattopadhay et
al. 2018), the pointing game and the energy-based pointing game when the data set has masks or
boxes (Zhang et al. 2016; Wang et al. 2020) and the model-randomisation check (Adebayo et al.
2018). It writes the table of means over images with paired bootstrap intervals, and each
method's differences to a --reference row (default: the centre-bias baseline-gaussian when it
is one of --methods) with paired intervals: faithfulness.md (also printed), results.json
(tables, per-image values, seconds per method),
faithfulness.json (the settings) and methods/<slug>.json (one method's values: a run started
again into the same folder reuses them, so methods can be added later). Targets: a data set's
image-level labels (--class-map/--label-offset as loupe maps) or the top --topk classes; image
files are explained for their top-1 class (or --topk). Images are resized to --size (default:
the model's input size). One process (not under torchrun)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "faithfulness", help="faithfulness metrics of map methods on a data set or "
        "image files, with bootstrap intervals", description=DESCRIPTION,
        examples=[
            "loupe faithfulness --dataset voc --root VOCdevkit --split val --model runs/cls "
            "--methods gradcam scorecam 'rise:n_masks=2000' --out runs/faith",
            "loupe faithfulness --images photos/ --model mobilenet_v2 --weights "
            "mobilenet_v2_imagenet1k_coral.pth --scale 'x*2-1' --label-offset 1 --methods cam "
            "gradcam saliency --metric-option 'road.fractions=(0.1,0.5,0.9)' --out runs/faith",
        ],
    )
    add_dataset_arguments(p, required=False)
    p.add_argument_group("or image files").add_argument(
        "--images", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
        help="image files or folders instead of a data set (targets: top --topk classes)")
    group = add_model_arguments(p, runs=True)
    group.add_argument("--class-map", help=CLASS_MAP_HELP)
    group.add_argument("--label-offset", type=non_negative_int, help=LABEL_OFFSET_HELP
                       + " (default: model.json's, or inferred from the class counts)")
    add_method_options(p.add_argument_group("methods"))
    add_metric_options(p.add_argument_group("metrics"))
    run_group = add_run_arguments(p, out_help="faithfulness folder")
    run_group.add_argument("--size", type=positive_int, help="images are resized to SIZE x SIZE "
                           "(default: the model's input size)")
    run_group.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    run_group.add_argument("--chunk-size", type=positive_int,
                           help="perturbed images per forward (memory only; default: 32 on "
                           "CUDA, on the CPU fewer for large images, 4 at 224x224)")
    p.set_defaults(run=run)


def add_method_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--methods", nargs="+", required=True, metavar="SPEC",
                       help="method specs, e.g. gradcam scorecam 'rise:n_masks=2000' (the "
                       "model-free baselines are rows like any method)")
    group.add_argument("--reference", metavar="SPEC",
                       help="the row every other is compared with, image by image: a second "
                       "table of differences with paired bootstrap intervals (default: "
                       "baseline-gaussian when it is one of --methods, else none)")
    group.add_argument("--target-layer", help=TARGET_LAYER_HELP)
    group.add_argument("--topk", type=positive_int, help="explain the K best-scoring classes "
                       "instead of the image-level labels (image files: default 1)")


def add_metric_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--metrics", nargs="+", choices=METRIC_NAMES, metavar="METRIC",
                       help=f"default: all ({', '.join(METRIC_NAMES)}), the pointing games "
                       "only with regions")
    group.add_argument("--steps", type=positive_int, help="deletion and insertion steps "
                       "(default: 20)")
    group.add_argument("--metric-option", nargs="+", action="extend", default=[],
                       metavar="GROUP.KEY=VALUE", help="an option of a metric function, e.g. "
                       "road.fractions=(0.1,0.5,0.9) insertion.baseline=0 randomization."
                       f"seed=1; groups: {', '.join(METRIC_GROUPS)}")
    group.add_argument("--score", choices=SCORES, default="probability",
                       help="what the perturbation metrics follow")
    group.add_argument("--regions", choices=REGION_SOURCES, default="auto",
                       help="regions of the pointing games (auto: masks, else boxes)")
    add_bootstrap_options(group)


def metric_options(pairs: list[str], steps: int | None) -> dict[str, dict[str, object]]:
    """``--metric-option GROUP.KEY=VALUE`` pairs (and ``--steps``) as ``group -> options``."""
    from loupe.method_specs import parse_value

    options: dict[str, dict[str, object]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        group, dot, key = name.strip().partition(".")
        if not sep or not dot or not group or not key:
            raise UserError(f"--metric-option {pair!r} must be GROUP.KEY=VALUE, e.g. "
                            "deletion.steps=50")
        try:
            options.setdefault(group, {})[key.replace("-", "_")] = parse_value(value)
        except ValueError as error:
            raise UserError(f"--metric-option {pair!r}: {error}") from None
    if steps is not None:
        for group in ("deletion", "insertion"):
            if "steps" in options.get(group, {}):
                raise UserError(f"--steps and --metric-option {group}.steps both set the "
                                "steps; give one")
            options.setdefault(group, {})["steps"] = steps
    return options


def run(args: argparse.Namespace) -> int:
    from loupe.distributed import launched_world_size, resolve_device
    from loupe.faithfulness import FaithfulnessConfig, faithfulness_markdown, run_faithfulness

    if args.dataset is None and not args.images:
        raise UserError("give --dataset KIND (with its options) or --images FILE_OR_DIR ...")
    if args.dataset is not None and args.images:
        raise UserError("give --dataset or --images, not both")
    if args.dataset is None and (args.root or args.split):
        raise UserError("--root and --split belong to a data set: give --dataset too")
    if args.weights is None and args.seed != 0:
        raise UserError("--seed only applies to --weights random")
    if launched_world_size() > 1:
        raise UserError("loupe faithfulness runs in one process; start it without torchrun")
    config = FaithfulnessConfig(
        out=args.out, model=args.model, methods=tuple(args.methods),
        dataset=dataset_spec(args) if args.dataset else None,
        images=tuple(args.images or ()), weights=args.weights, num_classes=args.num_classes,
        seed=args.seed, mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None, scale=args.scale, patch=args.patch,
        class_map=args.class_map, label_offset=args.label_offset,
        metrics=tuple(args.metrics) if args.metrics else None,
        metric_options=metric_options(args.metric_option, args.steps), topk=args.topk,
        target_layer=args.target_layer, size=args.size, regions=args.regions,
        score=args.score, batch_size=args.batch_size, chunk_size=args.chunk_size,
        workers=args.workers, bootstrap=args.bootstrap, bootstrap_seed=args.bootstrap_seed,
        level=args.level, reference=args.reference, progress=not args.no_progress,
    )
    results = run_faithfulness(config, resolve_device(args.device))
    print(faithfulness_markdown(results), end="")
    print(f"scored {results['images']} images with {len(results['methods'])} methods; "
          f"results in {args.out}")
    return 0
