"""``loupe masks``: pseudo-masks from a folder of map files, as paletted PNGs (VOC palette)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.args import add_command, add_dataset_arguments, add_run_arguments, dataset_spec
from loupe.cli.values import NonIncreasing, fraction

DESCRIPTION = """\
Pseudo-masks from a folder of map files (loupe maps), as paletted PNGs (VOC palette).
--threshold T applies IRN's background rule: a pixel takes the label of its best max-normalised
map where that score is above T, else background. --confident FG BG keeps confident pixels only
(255 = ignore between BG and FG). --crf refines each mask with a dense CRF on its image
(--images DIR or the data-set options). Resumable; sharded under torchrun."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "masks", help="pseudo-masks (paletted PNGs) from map files",
        description=DESCRIPTION,
        examples=[
            "loupe masks --maps runs/maps --threshold 0.25 --out runs/masks",
            "loupe masks --maps runs/maps --confident 0.30 0.05 --out runs/masks-confident",
            "loupe masks --maps runs/maps --crf --dataset voc --root VOCdevkit --split train "
            "--out runs/masks-crf",
        ],
    )
    p.add_argument("--maps", required=True, type=Path, help="folder written by loupe maps")
    p.add_argument("--threshold", type=fraction, default=0.25,
                   help="background score of the IRN rule, in [0, 1]")
    p.add_argument("--confident", type=fraction, nargs=2, metavar=("FG", "BG"),
                   action=NonIncreasing,
                   help="keep labels where the score >= FG, background where < BG, 255 between "
                   "(BG <= FG; default: off, --threshold's rule)")
    p.add_argument("--crf", action="store_true", help="dense-CRF refinement (pydensecrf2)")
    p.add_argument("--images", type=Path, help="folder of the images (<id>.jpg/.png) for --crf")
    add_dataset_arguments(p, required=False)
    add_run_arguments(p, out_help="output folder for <id>.png", workers=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loupe import distributed
    from loupe.data.spec import open_spec
    from loupe.mapsets.pseudo_masks import (
        MasksConfig,
        dataset_images,
        folder_images,
        write_pseudo_masks,
    )

    if args.images is not None and args.dataset is not None:
        raise UserError("give --images or --dataset for the CRF's images, not both")
    if (args.images is not None or args.dataset is not None) and not args.crf:
        raise UserError("--images/--dataset are only used by --crf; add --crf or leave them out")
    images = description = num_classes = None
    if args.images is not None:
        if not args.images.is_dir():
            raise UserError(f"--images {args.images}: folder not found")
        images, description = folder_images(args.images), str(args.images)
    elif args.dataset is not None:
        spec = dataset_spec(args)
        dataset = open_spec(spec, images=True)
        images, num_classes = dataset_images(dataset), len(dataset.class_names)
        description = f"dataset {spec.describe()}"
    config = MasksConfig(args.maps, args.out, args.threshold,
                         tuple(args.confident) if args.confident else None, args.crf,
                         progress=not args.no_progress, num_classes=num_classes)
    with distributed.distributed_session(args.device) as device:
        written, skipped = write_pseudo_masks(config, device, images, description)
        distributed.barrier()
    print(f"masks: {written} written, {skipped} already in {args.out}")
    return 0
