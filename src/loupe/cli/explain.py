"""``loupe explain``: class maps of images from a torchvision classifier, as overlays and arrays.

For each image ``NAME.jpg`` it writes ``NAME.METHOD.png`` (the input crop, then one overlay
panel per target titled with the class name and score) and ``NAME.METHOD.npz`` (``maps``
``(K, H, W)`` float16 raw maps at the model input's resolution, over the centre crop the model
saw; ``classes`` ``(K,)`` int64; ``scores`` ``(K,)`` float32), both atomically.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from loupe.cli import UserError
from loupe.cli.args import (
    LABEL_OFFSET_HELP,
    add_command,
    add_device_argument,
    add_method_arguments,
    add_model_arguments,
    method_options,
    preprocessing_options,
)
from loupe.cli.values import fraction, non_negative_int, output_folder, positive_int

if TYPE_CHECKING:  # imported where used: the parser needs no torch
    import torch

    from loupe.models import Classifier

logger = logging.getLogger(__name__)

# Whatever PIL reads (explain takes single photos; data sets use loupe.data's suffixes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "explain", help="class maps of images: overlay PNGs and float16 .npz arrays",
        description="Class maps of images from a torchvision classifier: for each image an "
        "overlay PNG (one panel per target)\nand the raw maps as a float16 .npz.",
        examples=[
            "loupe explain photo.jpg --model resnet50 --weights IMAGENET1K_V1 --topk 2 --out out/",
            "loupe explain photos/ --model resnet50 --weights IMAGENET1K_V1 --method scorecam "
            "--target 'tiger cat' 281 --out out/",
            "loupe explain cat.jpg --model mobilenet_v2 --weights mobilenet_v2_imagenet1k_coral"
            ".pth --scale 'x*2-1' --labels imagenet_labels_1001.txt --label-offset 1 --out out/",
        ],
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    group = add_model_arguments(p, runs=False)
    add_method_arguments(group)
    group.add_argument("--target", nargs="+", metavar="CLASS",
                       help="class indices or names to explain in every image")
    group.add_argument("--topk", type=positive_int, help="explain each image's K best classes "
                       "(default: 1)")
    group.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    add_device_argument(group)
    group.add_argument("--amp", action="store_true", help="run the model under autocast")
    group = p.add_argument_group("preprocessing (for state-dict or random weights) and labels")
    group.add_argument("--size", type=positive_int,
                       help="model input side (default: 224 or the weights')")
    group.add_argument("--resize", type=positive_int, help="shorter side before the centre crop "
                       "(default: size*256/224; = --size keeps the whole short side)")
    group.add_argument("--labels", type=Path, help="class names, one per line")
    group.add_argument("--label-offset", type=non_negative_int, default=0,
                       help=LABEL_OFFSET_HELP + "; the first OFFSET lines of --labels are "
                       "skipped")
    group.add_argument("--labels-offset", type=non_negative_int, dest="label_offset",
                       help=argparse.SUPPRESS)  # the old name, kept for scripts
    look = p.add_argument_group("output")
    look.add_argument("--scores", choices=("softmax", "sigmoid", "logit"), default="softmax",
                      help="what 'scores' holds")
    look.add_argument("--colormap", default="jet", help="matplotlib colour map of the overlays")
    look.add_argument("--alpha", type=fraction, default=0.5, help="overlay opacity")
    look.add_argument("--recursive", action="store_true", help="also search sub-folders")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from loupe.api import explain
    from loupe.distributed import resolve_device
    from loupe.io import load_rgb
    from loupe.reports.overlay import colormap_table

    images = collect_images(args.inputs, recursive=args.recursive)
    outputs = output_stems(images, args.out, args.method)
    options = method_options(args.method, args.option)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    colormap_table(args.colormap)  # fails early on an unknown colormap
    if not 0 <= args.alpha <= 1:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.target and args.topk:
        raise UserError("give --target or --topk, not both")
    if args.topk is not None and args.topk < 1:
        raise UserError(f"--topk must be at least 1, got {args.topk}")
    device = resolve_device(args.device)
    classifier = load_explained_classifier(args)
    model = classifier.model.to(device)
    names = classifier.class_names
    logger.debug("model %s, weights %s, preprocessing %s", args.model, classifier.source,
                 classifier.preprocessing)
    wanted = resolve_class_args(args.target, names) if args.target else None

    progress = tqdm(total=len(images), unit="img", disable=True if len(images) < 2 else None)
    with progress:
        for batch in chunks(list(zip(images, outputs, strict=True)), args.batch_size):
            views = torch.stack([classifier.preprocessing.view(load_rgb(p)) for p, _ in batch])
            views = views.to(device)
            x = classifier.preprocessing.normalize(views)
            with torch.no_grad():
                logits = model(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise UserError(f"{args.model} does not return class logits (B, classes)")
            classes = target_classes(logits, wanted, args.topk)
            scores = output_scores(logits, args.scores).gather(1, classes)
            maps = explain(model, x, classes, method=args.method, target_layer=args.target_layer,
                           autocast=args.amp, **options)
            for i, (path, stem) in enumerate(batch):
                titles = [title(c, s, names) for c, s in zip(classes[i].tolist(),
                                                             scores[i].tolist(), strict=True)]
                write_outputs(stem, maps[i], classes[i], scores[i], views[i], titles, args)
                progress.write(f"{path.name}: " + "; ".join(titles))
                progress.update()
    print(f"wrote {len(images)} overlays and map files to {args.out}")
    return 0


def collect_images(inputs: Sequence[str], recursive: bool = False) -> list[Path]:
    """Image files named directly or found in folders (by suffix, sorted). A named file that is
    not a readable image is an error; folder members PIL does not recognise as any image format
    (a LICENSE.png that is text) are skipped with a warning, damaged images are an error; a
    folder without images is an error."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            members = path.rglob("*") if recursive else path.iterdir()
            candidates = sorted(
                f for f in members
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
            )
            readable = []
            for f in candidates:
                problem = image_problem(f)
                if problem is None:
                    readable.append(f)
                elif problem.startswith("cannot identify image file"):
                    logger.warning("skipping %s: not an image", f)  # e.g. a LICENSE.png
                else:
                    raise UserError(f"{f}: cannot read image ({problem})")
            if not readable:
                raise UserError(
                    f"no images found in {path} (looked for {', '.join(IMAGE_SUFFIXES)}"
                    f"{' in sub-folders too' if recursive else ''})"
                )
            found.extend(readable)
        elif path.is_file():
            problem = image_problem(path)
            if problem is not None:
                raise UserError(f"{path}: cannot read image ({problem})")
            found.append(path)
        else:
            raise UserError(f"{path}: no such image file or folder")
    return found


def image_problem(path: Path) -> str | None:
    """None if PIL can identify ``path`` as an image (header only), else why not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - reading the header is the check
    except UnidentifiedImageError:
        return f"cannot identify image file {path}"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return str(error) or type(error).__name__
    return None


def output_stems(images: Sequence[Path], out: Path, method: str) -> list[Path]:
    """``OUT/NAME.METHOD`` for each image (``.png`` and ``.npz`` are added); a UserError when two
    inputs share a name."""
    stems: dict[Path, Path] = {}
    for path in images:
        stem = out / f"{path.stem}.{method}"
        if stem in stems:
            raise UserError(
                f"{stems[stem]} and {path} would write the same outputs ({stem}.png); "
                "rename one or explain them separately"
            )
        stems[stem] = path
    return list(stems)


def load_explained_classifier(args: argparse.Namespace) -> Classifier:
    """The model, preprocessing and class names the arguments describe."""
    from loupe.models import load_classifier, read_labels

    labels = read_labels(args.labels, args.label_offset) if args.labels else None
    return load_classifier(
        args.model, args.weights, num_classes=args.num_classes, seed=args.seed,
        options=preprocessing_options(args), labels=labels, labels_source=str(args.labels),
        patch=args.patch,
    )


def resolve_class_args(values: Sequence[str], names: Sequence[str] | None) -> list[int]:
    """``--target`` values as class indices: integers, or class names (a full label, or one of
    its comma-separated synonyms, case-insensitive)."""
    classes = []
    for value in values:
        try:
            classes.append(int(value))
            continue
        except ValueError:
            pass
        if names is None:
            raise UserError(f"--target {value!r}: class names need --labels or enum weights")
        wanted = value.strip().lower()
        hits = [
            i for i, name in enumerate(names)
            if name.lower() == wanted or wanted in (s.strip().lower() for s in name.split(","))
        ]
        if len(hits) != 1:
            problem = "matches several classes" if hits else "is not a class name"
            raise UserError(f"--target {value!r} {problem}; give the class index instead")
        classes.append(hits[0])
    return classes


def target_classes(logits: torch.Tensor, wanted: list[int] | None, topk: int | None
                   ) -> torch.Tensor:
    """``(B, K)`` classes to explain: ``wanted`` for every image, else the top-``topk``."""
    import torch

    b, num_classes = logits.shape
    if wanted is not None:
        bad = [c for c in wanted if not 0 <= c < num_classes]
        if bad:
            raise UserError(f"--target {bad[0]} is out of range (0..{num_classes - 1})")
        return torch.tensor(wanted, device=logits.device).expand(b, -1)
    k = topk or 1
    if k > num_classes:
        raise UserError(f"--topk {k} exceeds the model's {num_classes} classes")
    return logits.topk(k, dim=1).indices


def output_scores(logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "softmax":
        return logits.float().softmax(1)
    if kind == "sigmoid":
        return logits.float().sigmoid()
    return logits.float()


def title(cls: int, score: float, names: Sequence[str] | None) -> str:
    """``"macaw (88) 0.997"``, or ``"class 88 0.997"`` without class names."""
    if not names:
        return f"class {cls} {score:.3f}"
    return f"{names[cls].split(',')[0]} ({cls}) {score:.3f}"


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def write_outputs(stem: Path, maps: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor,
                  view: torch.Tensor, titles: list[str], args: argparse.Namespace) -> None:
    """``stem.npz`` (maps, classes, scores) and ``stem.png`` (overlay panels), atomically."""
    import numpy as np

    from loupe.io import save_image, save_npz
    from loupe.mapsets.files import float16_maps
    from loupe.reports.overlay import overlay_panels

    save_npz(
        stem.with_name(stem.name + ".npz"),
        maps=float16_maps(maps),
        classes=classes.cpu().numpy().astype(np.int64),
        scores=scores.float().cpu().numpy(),
    )
    sheet = overlay_panels(view, maps, titles, alpha=args.alpha, colormap=args.colormap)
    save_image(stem.with_name(stem.name + ".png"), sheet)
