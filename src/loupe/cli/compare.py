"""``loupe compare``: which map method makes the best pseudo-masks for this model and data?
(see :data:`DESCRIPTION`)."""

from __future__ import annotations

import argparse

from loupe.cli.args import (
    TARGET_LAYER_HELP,
    add_command,
    add_dataset_arguments,
    add_evaluation_options,
    add_map_options,
    add_model_arguments,
    add_run_arguments,
    maps_config,
)
from loupe.cli.values import non_negative_int, swept_threshold

DESCRIPTION = """\
Which map method makes the best pseudo-masks for this model and data? Computes the maps of
every --methods spec into OUT/maps/<slug>/ (as loupe maps: resumable, a folder made with other
settings is refused), optionally CRF-refined references (--crf SPEC: loupe masks --crf at every
threshold, in OUT/crf/), evaluates all of them and the two model-free baselines across the
background thresholds in one pass, and writes a ranked table with paired bootstrap intervals
against --reference (compare.md, results.json), per_image.json, miou_vs_threshold.png,
overlays.png (the images where the methods disagree most) and compare.html. --split-by-id
dev|test compares on the first or second half of the sorted image ids. Run again with the same
settings, it reuses every map and mask; methods, references and evaluation options may change
between runs, the data set, model and map options may not."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "compare", help="rank map methods as pseudo-masks on a data set (maps, "
        "CRF references, bootstrap, HTML)", description=DESCRIPTION,
        examples=[
            "loupe compare --dataset voc --root VOCdevkit --split train --split-by-id dev "
            "--model runs/cls --methods cam gradcam 'shuffle:smooth=0.03' --crf cam "
            "--out runs/compare",
            "loupe compare --dataset yolo --root coco128-seg --class-names coco --model "
            "resnet50 --weights IMAGENET1K_V1 --class-map coco_to_imagenet --methods gradcam "
            "layercam --reference layercam --out runs/compare-r50",
        ],
    )
    add_dataset_arguments(p)
    add_model_arguments(p, runs=True)
    group = p.add_argument_group("methods")
    group.add_argument("--methods", nargs="+", required=True, metavar="SPEC",
                       help="method specs, e.g. cam gradcam 'shuffle:smooth=0.03' smoothgrad "
                       "(the baselines are always added)")
    group.add_argument("--reference", metavar="SPEC", help="the row the others are compared "
                       "with (a spec of --methods, or SPEC+crf; default: the first method)")
    group.add_argument("--crf", nargs="+", default=[], metavar="SPEC",
                       help="also rows SPEC+crf: those methods' pseudo-masks refined by the "
                       "dense CRF at every threshold (pydensecrf2)")
    group.add_argument("--target-layer", help=TARGET_LAYER_HELP)
    maps_group = p.add_argument_group("maps")
    run_group = add_run_arguments(p, out_help="comparison folder")
    add_map_options(maps_group, run_group)
    group = add_evaluation_options(p, class_map=False)
    group.add_argument("--common-threshold", type=swept_threshold, default=0.15,
                       help="the fixed threshold of the second difference to the reference "
                       "(IRN's; of the swept 0, 0.05, ..., 0.95)")
    group.add_argument("--overlays", type=non_negative_int, default=6,
                       help="images where the methods disagree most, in overlays.png (0: none)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loupe import distributed
    from loupe.comparison import CompareConfig, ranked_table, run_comparison
    from loupe.evaluation import ResultOptions

    config = CompareConfig(
        maps=maps_config(args, "cam", {}), methods=tuple(args.methods), out=args.out,
        reference=args.reference, crf=tuple(args.crf),
        results=ResultOptions(fixed=tuple(args.fixed), spread_range=tuple(args.spread_range),
                              bootstrap=args.bootstrap, bootstrap_seed=args.bootstrap_seed,
                              level=args.level, class_map=args.class_map),
        ignore_classes=tuple(args.ignore_classes), common_threshold=args.common_threshold,
        overlays=args.overlays, progress=not args.no_progress,
    )
    with distributed.distributed_session(args.device) as device:
        results = run_comparison(config, device)
        distributed.barrier()
    if results is not None:
        print(ranked_table(results.summary), end="")
        print(f"compared {results.summary['images']} images; results in {args.out}")
    return 0
