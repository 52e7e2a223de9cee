"""``loupe predict``: segment images with a model from ``loupe train-seg``; paletted PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from loupe.cli import UserError
from loupe.cli.args import NO_PROGRESS_HELP, add_command, add_device_argument
from loupe.cli.values import output_folder

DESCRIPTION = """\
Segment images with a model from loupe train-seg: one paletted PNG OUT/<stem>.png per image
(VOC palette, class indices of the model's data set)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "predict", help="segmentation masks of images (paletted PNGs)",
        description=DESCRIPTION,
        examples=["loupe predict photos/ --checkpoint runs/seg --out runs/predicted",
                  "loupe predict a.jpg b.jpg --checkpoint runs/seg/model.pt --device cpu "
                  "--out masks/"],
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", type=Path,
                   help="image files or folders")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="run folder of loupe train-seg, or its model.pt")
    p.add_argument("--out", required=True, type=output_folder,
                   help="folder for <stem>.png masks")
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(run=run)


def image_files(inputs: list[Path]) -> list[Path]:
    """Image files named directly or found (non-recursively) in folders; a UserError for a
    missing path, an empty result, or two images with the same stem (same output name)."""
    from loupe.data.base import IMAGE_SUFFIXES

    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    if not files:
        raise UserError(f"no images found in {', '.join(str(p) for p in inputs)}")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise UserError(f"{path} and {stems[path.stem]} would both be written as "
                            f"{path.stem}.png; predict them into different --out folders")
        stems[path.stem] = path
    return files


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from loupe.distributed import resolve_device
    from loupe.io import load_rgb
    from loupe.masks.palette import save_mask_png
    from loupe.models import load_model, preprocessing_of
    from loupe.training.segmentation import predict_masks
    from loupe.training.transforms import image_tensor

    files = image_files(args.inputs)
    device = resolve_device(args.device)
    model, spec = load_model(args.checkpoint, device)
    if spec.get("kind") != "segmenter":
        raise UserError(f"--checkpoint {args.checkpoint}: a {spec.get('kind')} model; predict "
                        "needs a segmentation model from loupe train-seg")
    preprocessing = preprocessing_of(spec)
    for path in tqdm(files, desc="predict", disable=args.no_progress):
        image = image_tensor(load_rgb(path)).to(device)
        mask = predict_masks(model, preprocessing(image)[None])[0]
        save_mask_png(args.out / f"{path.stem}.png", mask.cpu())
    print(f"{len(files)} masks in {args.out}")
    return 0
