"""``loupe maps``: class maps for every image of a data set, one ``<id>.npz`` per image.

Maps are those of each image's ground-truth classes (or its ``--topk`` best), at the image's
size, optionally summed over ``--scales`` and ``--flip`` (the IRN protocol). The run is
resumable (finished images are skipped) and runs sharded under ``torchrun --nproc_per_node N
-m loupe maps ...`` (docs/distributed.md). ``maps.json`` describes the run.
"""

from __future__ import annotations

import argparse

from loupe.cli import UserError
from loupe.cli.args import (
    CLASS_MAP_HELP,
    LABEL_OFFSET_HELP,
    add_command,
    add_dataset_arguments,
    add_method_arguments,
    add_model_arguments,
    add_run_arguments,
    dataset_spec,
    method_options,
)
from loupe.cli.values import non_negative_int, positive_float, positive_int

DESCRIPTION = """\
Class maps for every image of a data set, one OUT/<id>.npz per image (float16 maps of the
image's ground-truth classes, or of its --topk best, at the image's size), optionally summed
over --scales and --flip (the IRN protocol). Resumable: finished images are skipped. Sharded
under torchrun (docs/distributed.md). OUT/maps.json records the settings."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "maps", help="class maps of a whole data set (<id>.npz files)",
        description=DESCRIPTION,
        examples=[
            "loupe maps --dataset voc --root VOCdevkit --split train --model runs/cls "
            "--method gradcam --scales 1.0 0.5 1.5 2.0 --flip --out runs/maps",
            "loupe maps --dataset yolo --root coco128-seg --class-names coco --model resnet50 "
            "--weights IMAGENET1K_V1 --class-map coco_to_imagenet --out runs/maps-r50",
            "torchrun --nproc_per_node 4 -m loupe maps --dataset synthetic --model runs/demo/"
            "classifier --out runs/maps",
        ],
    )
    add_dataset_arguments(p)
    add_model_arguments(p, runs=True)
    group = p.add_argument_group("maps")
    add_method_arguments(group)
    group.add_argument("--scales", type=positive_float, nargs="+", default=[1.0],
                       help="input scales whose maps are summed (IRN: 1.0 0.5 1.5 2.0)")
    group.add_argument("--flip", action="store_true",
                       help="add the maps of the horizontally flipped input (IRN)")
    group.add_argument("--topk", type=positive_int, help="maps of the K best-scoring classes "
                       "(default: of the image-level labels)")
    group.add_argument("--class-map", help=CLASS_MAP_HELP)
    group.add_argument("--label-offset", type=non_negative_int, help=LABEL_OFFSET_HELP
                       + " (default: model.json's, or inferred from the class counts)")
    group = add_run_arguments(p, out_help="output folder")
    group.add_argument("--size", type=positive_int, help="resize images to SIZE x SIZE for "
                       "the model, maps resized back (default: each image at its own size)")
    group.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    group.add_argument("--amp", action="store_true", help="run the model under autocast")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loupe import distributed
    from loupe.mapsets.generate import MapsConfig, generate_maps

    if args.weights is None and args.seed != 0:
        raise UserError("--seed only applies to --weights random")
    config = MapsConfig(
        dataset=dataset_spec(args), out=args.out, model=args.model, weights=args.weights,
        method=args.method, options=method_options(args.method, args.option),
        target_layer=args.target_layer, scales=tuple(args.scales), flip=args.flip,
        topk=args.topk, class_map=args.class_map, label_offset=args.label_offset,
        size=args.size, batch_size=args.batch_size, workers=args.workers, amp=args.amp,
        num_classes=args.num_classes, seed=args.seed,
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
        scale=args.scale, patch=args.patch, progress=not args.no_progress,
    )
    config.check()
    with distributed.distributed_session(args.device) as device:
        result = generate_maps(config, device)
        rank, world = distributed.rank(), distributed.world_size()
        distributed.barrier()
    print(f"maps: {result.written} written, {result.skipped} already in {args.out}"
          + (f" (rank {rank} of {world})" if world > 1 else ""))
    return 0
