"""``loupe maps``: class maps for every image of a data set, one ``<id>.npz`` per image.

Maps are those of each image's ground-truth classes (or its ``--topk`` best), at the image's
size, optionally summed over ``--scales`` and ``--flip`` (the IRN protocol). The run is
resumable (finished images are skipped) and runs sharded under ``torchrun --nproc_per_node N
-m loupe maps ...`` (docs/distributed.md). ``maps.json`` describes the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.explain import method_options
from loupe.pipeline import distributed
from loupe.pipeline.datasets import PIPELINE_KINDS, DatasetSpec
from loupe.pipeline.generate import MapsConfig, generate_maps
from loupe.registry import list_methods
from loupe.training.common import SyntheticSplits


def add_dataset_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The data-set options shared by ``maps``, ``masks`` and ``evaluate``."""
    group = p.add_argument_group("data set")
    group.add_argument("--dataset", required=required, choices=PIPELINE_KINDS)
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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("maps", help="class maps of a whole data set (<id>.npz files)",
                              description=__doc__.splitlines()[0])
    add_dataset_arguments(p)
    group = p.add_argument_group("model")
    group.add_argument("--model", required=True,
                       help="a loupe training run (folder or model.pt with model.json), or a "
                       "torchvision model name with --weights")
    group.add_argument("--weights", help="torchvision weight name, a state-dict file, or "
                       "'random' (torchvision models only)")
    group.add_argument("--num-classes", type=int, help="outputs of a state-dict model")
    group.add_argument("--seed", type=int, default=0, help="seed of --weights random")
    group.add_argument("--patch", metavar="PY_FILE:FUNC", help="call FUNC(model) after loading")
    group.add_argument("--mean", type=float, nargs=3, help="input mean of RGB in [0, 1]")
    group.add_argument("--std", type=float, nargs=3, help="input std of RGB in [0, 1]")
    group.add_argument("--scale", help="affine input rule instead of --mean/--std, e.g. 'x*2-1'")
    group = p.add_argument_group("maps")
    group.add_argument("--method", default="gradcam", choices=list_methods())
    group.add_argument("--option", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="method option, e.g. n_shuffles=8 seed=0")
    group.add_argument("--target-layer", help="layer for CAM methods (default: automatic)")
    group.add_argument("--scales", type=float, nargs="+", default=[1.0],
                       help="input scales whose maps are summed (IRN: 1.0 0.5 1.5 2.0)")
    group.add_argument("--flip", action="store_true",
                       help="add the maps of the horizontally flipped input (IRN)")
    group.add_argument("--topk", type=int, help="maps of the K best-scoring classes instead of "
                       "the image-level labels")
    group.add_argument("--class-map", help="data-set class -> classifier classes: "
                       "'coco_to_imagenet' or a JSON file {name: [indices]}")
    group.add_argument("--label-offset", type=int, help="classifier output k is data-set class "
                       "k + OFFSET (default: model.json, or inferred from the class counts)")
    group = p.add_argument_group("run")
    group.add_argument("--out", required=True, type=Path, help="output folder")
    group.add_argument("--size", type=int, help="resize images to SIZE x SIZE for the model "
                       "(maps are resized back); default: each image at its own size")
    group.add_argument("--batch-size", type=int, default=8)
    group.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    group.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available; "
                       "under torchrun cuda means cuda:LOCAL_RANK)")
    group.add_argument("--amp", action="store_true", help="run the model under autocast")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
