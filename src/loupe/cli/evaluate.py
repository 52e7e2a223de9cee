"""``loupe evaluate``: map (or mask) folders against a data set's ground truth (see
:data:`DESCRIPTION`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli.args import (
    add_command,
    add_dataset_arguments,
    add_evaluation_options,
    add_run_arguments,
    dataset_spec,
)
from loupe.cli.values import (
    SWEPT_THRESHOLDS,
    fraction,
    fraction_below_one,
    non_negative_int,
    positive_fraction,
)

DESCRIPTION = """\
Map (or mask) folders against a data set's ground truth. Per method: the mIoU at every
background threshold 0.00..0.95 (one pass), the best mIoU and its threshold, the mIoU at fixed
thresholds and its spread over a range (AMN's robustness figures), per-class IoU, precision and
recall; with several folders, paired bootstrap intervals of each method's mIoU difference to
the best one (and to baselines). --ignore-classes and --class-map leave data-set classes out
of these scores. --boxes adds localization (top-1 loc, GT-known loc, MaxBoxAccV2, PxAP) and
CAM's ILSVRC protocol (top-1 and top-5 localization error; top-5 needs maps of loupe maps
--topk 5, the three-box heuristic --topk 3 or more).
Writes results.json, report.md, miou_vs_threshold.png and overlays.png into --out. Under
torchrun the images are sharded and the matrices all-reduced; rank 0 writes."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "evaluate", help="mIoU sweeps, bootstrap comparisons, WSOL metrics of map "
        "or mask folders", description=DESCRIPTION,
        examples=[
            "loupe evaluate --maps runs/maps-gradcam runs/maps-shuffle --dataset voc --root "
            "VOCdevkit --split train --out runs/eval",
            "loupe evaluate --masks runs/masks --dataset voc --root VOCdevkit --split train "
            "--bootstrap 0 --out runs/eval-masks",
            "loupe evaluate --maps runs/maps-r50 --dataset yolo --root coco128-seg "
            "--class-names coco --class-map coco_to_imagenet --out runs/eval-r50",
        ],
    )
    group = p.add_argument_group("what to evaluate")
    group.add_argument("--maps", nargs="+", action="extend", default=[], type=Path,
                       metavar="DIR", help="map folders written by loupe maps (one per method)")
    group.add_argument("--masks", nargs="+", action="extend", default=[], type=Path,
                       metavar="DIR", help="folders of paletted mask PNGs (already thresholded)")
    group.add_argument("--names", nargs="+", help="method names in the reports (default: the "
                       "folder names), --maps first then --masks")
    add_dataset_arguments(p)
    group = add_evaluation_options(p)
    group.add_argument("--boxes", action="store_true",
                       help="also localization: top-1 loc, GT-known loc, MaxBoxAccV2, PxAP")
    group.add_argument("--box-threshold", type=fraction, default=0.2,
                       help="CAM box rule for top-1/GT-known loc (fraction of the map's range)")
    group.add_argument("--loc-threshold", type=fraction_below_one, default=0.2,
                       help="box rule of CAM's ILSVRC localization error: fraction of the "
                       "map's maximum (CAM 0.2, the default; Grad-CAM's paper 0.15)")
    group.add_argument("--iou", type=positive_fraction, default=0.5,
                       help="IoU a box needs (top-1/GT-known loc, ILSVRC error; 0.5)")
    group.add_argument("--overlays", type=non_negative_int, default=6,
                       help="images in overlays.png (0: none; needs images)")
    add_run_arguments(p, out_help="run folder for the results")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loupe import distributed
    from loupe.evaluation import (
        EvaluationConfig,
        ResultOptions,
        build_results,
        check_evaluation_folder,
        evaluate_sources,
        make_sources,
        write_evaluation,
    )

    thresholds = SWEPT_THRESHOLDS
    spec = dataset_spec(args)
    check_evaluation_folder(args.out)  # before the pass, not after it
    sources = make_sources(args.maps, args.masks, args.names)
    config = EvaluationConfig(dataset=spec, sources=sources, thresholds=thresholds,
                              boxes=args.boxes, box_threshold=args.box_threshold,
                              loc_threshold=args.loc_threshold,
                              workers=args.workers, progress=not args.no_progress,
                              ignore_classes=tuple(args.ignore_classes),
                              class_map=args.class_map)
    options = ResultOptions(fixed=tuple(args.fixed), spread_range=tuple(args.spread_range),
                            bootstrap=args.bootstrap, bootstrap_seed=args.bootstrap_seed,
                            level=args.level, boxes=args.boxes, iou=args.iou,
                            class_map=args.class_map)
    with distributed.distributed_session(args.device) as device:
        tally = evaluate_sources(config, device)
        if tally is not None:
            results = build_results(tally, sources, thresholds, spec.describe(), options)
            write_evaluation(args.out, results, sources, spec, args.overlays)
        distributed.barrier()
    if tally is not None:
        best = max(results["methods"].items(), key=lambda kv: kv[1]["miou"], default=None)
        summary = f"; best {best[0]} mIoU {100 * best[1]['miou']:.1f}" if best else ""
        print(f"evaluated {len(tally.ids)} images{summary}; results in {args.out}")
    return 0
