"""``loupe evaluate``: map (or mask) folders against a data set's ground truth.

Per method: the mIoU at every background threshold 0.00..0.95 (one pass), the best mIoU and
its threshold, the mIoU at fixed thresholds and its spread over a range (AMN's robustness
figures), per-class IoU, precision and recall; with several folders, paired bootstrap
intervals of each method's mIoU difference to the best one (and to baselines).
``--ignore-classes`` and ``--class-map`` leave data-set classes out of these scores (e.g. the
COCO classes without an ImageNet counterpart when the maps come through a class map). ``--boxes``
adds localization (top-1 loc, GT-known loc, MaxBoxAccV2, PxAP) and CAM's ILSVRC protocol (top-1
and top-5 localization error; top-5 needs maps of ``loupe maps --topk 5``). Writes
``results.json``, ``report.md``, ``miou_vs_threshold.png`` and ``overlays.png`` into
``--out``. Under ``torchrun`` the images are sharded and the matrices all-reduced; rank 0
writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe import distributed
from loupe.cli import UserError
from loupe.cli.args import add_dataset_arguments, add_run_arguments, dataset_spec
from loupe.evaluation import (
    EvaluationConfig,
    ResultOptions,
    build_results,
    evaluate_sources,
    make_sources,
    write_evaluation,
)
from loupe.metrics import default_thresholds


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="mIoU sweeps, bootstrap comparisons, WSOL "
                              "metrics of map or mask folders", description=__doc__.splitlines()[0])
    group = p.add_argument_group("what to evaluate")
    group.add_argument("--maps", nargs="+", action="extend", default=[], type=Path,
                       metavar="DIR", help="map folders written by loupe maps (one per method)")
    group.add_argument("--masks", nargs="+", action="extend", default=[], type=Path,
                       metavar="DIR", help="folders of paletted mask PNGs (already thresholded)")
    group.add_argument("--names", nargs="+", help="method names in the reports (default: the "
                       "folder names), --maps first then --masks")
    add_dataset_arguments(p)
    group = p.add_argument_group("evaluation")
    group.add_argument("--fixed", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.3],
                       help="thresholds whose mIoU is reported (default 0.1 0.15 0.2 0.3)")
    group.add_argument("--spread-range", type=float, nargs=2, default=[0.1, 0.6],
                       metavar=("LO", "HI"), help="threshold range of the spread (0.1 0.6)")
    group.add_argument("--bootstrap", type=int, default=1000,
                       help="bootstrap resamples of the images (0: none; default 1000)")
    group.add_argument("--bootstrap-seed", type=int, default=0)
    group.add_argument("--level", type=float, default=0.95, help="interval level (0.95)")
    group.add_argument("--ignore-classes", nargs="+", action="extend", default=[],
                       metavar="NAME", help="data-set classes left out of the segmentation "
                       "scores (sweep, per-class table, mean, bootstrap): their ground-truth "
                       "pixels are not counted (as 255), their maps are not used and their "
                       "labels in --masks files count as background; box metrics are unaffected")
    group.add_argument("--class-map", metavar="FILE",
                       help="also ignore every class without a counterpart in this class map "
                       "(as loupe maps --class-map: 'coco_to_imagenet' or a JSON file "
                       "{name: [indices]}); combines with --ignore-classes")
    group.add_argument("--boxes", action="store_true",
                       help="also localization: top-1 loc, GT-known loc, MaxBoxAccV2, PxAP")
    group.add_argument("--box-threshold", type=float, default=0.2,
                       help="CAM box rule for top-1/GT-known loc (fraction of the map's range)")
    group.add_argument("--loc-threshold", type=float, default=0.2,
                       help="box rule of CAM's localization error: fraction of the map's "
                       "maximum (CAM 0.2, the default; Grad-CAM's paper 0.15)")
    group.add_argument("--iou", type=float, default=0.5, help="IoU a box needs (0.5)")
    group.add_argument("--overlays", type=int, default=6,
                       help="images in overlays.png (0: none; needs images)")
    add_run_arguments(p, out_help="run folder for the results")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if not 0 < args.level < 1:
        raise UserError(f"--level must lie in (0, 1), got {args.level}")
    thresholds = tuple(round(float(t), 6) for t in default_thresholds().tolist())
    for value in args.fixed:
        if not any(abs(value - t) < 1e-6 for t in thresholds):
            raise UserError(f"--fixed {value:g} is not one of the swept thresholds 0.00, 0.05, "
                            "..., 0.95")
    spec = dataset_spec(args)
    sources = make_sources(args.maps, args.masks, args.names)
    if not 0 <= args.loc_threshold < 1:
        raise ValueError(f"--loc-threshold must lie in [0, 1), got {args.loc_threshold}")
    if not 0 < args.iou <= 1:
        raise ValueError(f"--iou must lie in (0, 1], got {args.iou}")
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
