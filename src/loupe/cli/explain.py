"""``loupe explain``: class maps of images from a torchvision classifier, as overlays and arrays.

For each image ``NAME.jpg`` it writes ``NAME.METHOD.png`` (the input crop, then one overlay
panel per target titled with the class name and score) and ``NAME.METHOD.npz`` (``maps``
``(K, H, W)`` float16 raw maps at the model input's resolution, over the centre crop the model
saw; ``classes`` ``(K,)`` int64; ``scores`` ``(K,)`` float32), both atomically.
"""

from __future__ import annotations

import argparse
import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from loupe.api import explain
from loupe.cli import UserError
from loupe.io import load_rgb, save_image, save_npz
from loupe.models import (
    Classifier,
    apply_patch,
    load_classifier,
    preprocessing_from_options,
    preprocessing_from_weights,
    read_labels,
    weights_enum,
)
from loupe.overlay import colormap_table, overlay_panels
from loupe.registry import get_method, list_methods

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
FLOAT16_MAX = float(np.finfo(np.float16).max)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="class maps of images: overlay PNGs and float16 .npz arrays",
        description="Class maps of images from a torchvision classifier: for each image an "
        "overlay PNG (one panel per target) and the raw maps as a float16 .npz.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--model", required=True, help="torchvision model name, e.g. resnet50")
    p.add_argument(
        "--weights", required=True,
        help="torchvision weight name (IMAGENET1K_V1, DEFAULT), a state-dict file, or 'random'",
    )
    p.add_argument("--num-classes", type=int, help="outputs of a state-dict model (default: "
                   "read from the file)")
    p.add_argument("--seed", type=int, default=0, help="seed of --weights random (default 0)")
    p.add_argument("--patch", metavar="PY_FILE:FUNC",
                   help="call FUNC(model) from PY_FILE after loading (trusted code only)")
    p.add_argument("--method", default="gradcam", choices=list_methods())
    p.add_argument("--option", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="method option, e.g. n_shuffles=8 grids=2,3 (ints, floats, bools, lists)")
    p.add_argument("--target", nargs="+", metavar="CLASS",
                   help="class indices or names to explain in every image")
    p.add_argument("--topk", type=int, help="explain each image's K best classes (default 1)")
    p.add_argument("--target-layer", help="layer for CAM methods (default: found automatically)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="run the model under autocast")
    group = p.add_argument_group("preprocessing (for state-dict or random weights)")
    group.add_argument("--size", type=int, help="model input side (default 224 or the weights')")
    group.add_argument("--resize", type=int, help="shorter side before the centre crop "
                       "(default size*256/224; = --size keeps the whole short side)")
    group.add_argument("--mean", type=float, nargs=3, help="mean of RGB in [0, 1]")
    group.add_argument("--std", type=float, nargs=3, help="std of RGB in [0, 1]")
    group.add_argument("--scale", help="affine map of RGB in [0, 1] instead, e.g. 'x*2-1'")
    group.add_argument("--labels", type=Path, help="class names, one per line")
    group.add_argument("--labels-offset", type=int, default=0,
                       help="lines to skip first (1 when line 0 is 'background')")
    look = p.add_argument_group("output")
    look.add_argument("--scores", choices=("softmax", "sigmoid", "logit"), default="softmax",
                      help="what 'scores' holds (default softmax)")
    look.add_argument("--colormap", default="jet")
    look.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    look.add_argument("--recursive", action="store_true", help="also search sub-folders")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    classifier = build_classifier(args)
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
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - reading the header is the check
    except UnidentifiedImageError:
        return f"cannot identify image file {path}"
    except (OSError, SyntaxError, ValueError) as error:
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


def parse_value(text: str) -> object:
    """``"8"`` -> 8, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"none"`` -> None, ``"2,3"`` -> (2, 3);
    anything else stays a string."""
    if "," in text:
        return tuple(parse_value(part) for part in text.split(",") if part != "")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def method_options(method: str, pairs: Sequence[str]) -> dict[str, object]:
    """``--option KEY=VALUE`` pairs parsed and checked against the method's parameters."""
    function = get_method(method).function
    params = list(inspect.signature(function).parameters.values())[1:]
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--option {pair!r} must be KEY=VALUE, e.g. n_shuffles=8")
        if not open_ended and key not in known:
            choices = ", ".join(known) or "none"
            raise UserError(f"method {method!r} has no option {key!r} (its options: {choices})")
        options[key] = parse_value(value.strip())
    return options


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserError(f"--device {name!r} is not a device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


def build_classifier(args: argparse.Namespace) -> Classifier:
    """The model, preprocessing and class names the arguments describe."""
    labels = read_labels(args.labels, args.labels_offset) if args.labels else None
    enum = None if Path(args.weights).is_file() else weights_enum(args.model, args.weights)
    mean = tuple(args.mean) if args.mean else None
    std = tuple(args.std) if args.std else None
    preprocessing = None
    if enum is None:
        preprocessing = preprocessing_from_options(
            size=args.size or 224, resize=args.resize, scale=args.scale, mean=mean, std=std
        )
    elif any(v is not None for v in (args.size, args.resize, args.mean, args.std, args.scale)):
        own = preprocessing_from_weights(enum)  # explicit options override the enum's
        if args.scale is None and mean is None and std is None:
            mean, std = own.mean, own.std
        size = args.size or own.size
        resize = args.resize or (own.resize if args.size is None else None)
        preprocessing = replace(
            preprocessing_from_options(size=size, resize=resize, scale=args.scale, mean=mean,
                                       std=std),
            interpolation=own.interpolation,
        )
    classifier = load_classifier(
        args.model, args.weights, num_classes=args.num_classes, preprocessing=preprocessing,
        labels=labels, labels_source=str(args.labels), seed=args.seed,
    )
    if args.patch:
        patched = apply_patch(classifier.model, args.patch).eval()
        classifier = Classifier(patched, classifier.preprocessing, classifier.class_names,
                                f"{classifier.source} + {args.patch}")
    return classifier


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


def float16_maps(maps: torch.Tensor) -> np.ndarray:
    """Raw maps as float16, clamped to float16's range (with a warning) instead of inf."""
    maps = maps.float()
    peak = float(maps.abs().nan_to_num(nan=0.0).max())
    if peak > FLOAT16_MAX:
        logger.warning("maps exceed float16's range (%.3g); values clamped", peak)
    if maps.isnan().any():
        logger.warning("maps contain NaN")
    return maps.clamp(-FLOAT16_MAX, FLOAT16_MAX).half().cpu().numpy()


def write_outputs(stem: Path, maps: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor,
                  view: torch.Tensor, titles: list[str], args: argparse.Namespace) -> None:
    """``stem.npz`` (maps, classes, scores) and ``stem.png`` (overlay panels), atomically."""
    save_npz(
        stem.with_name(stem.name + ".npz"),
        maps=float16_maps(maps),
        classes=classes.cpu().numpy().astype(np.int64),
        scores=scores.float().cpu().numpy(),
    )
    sheet = overlay_panels(view, maps, titles, alpha=args.alpha, colormap=args.colormap)
    save_image(stem.with_name(stem.name + ".png"), sheet)
