"""``loupe explain``: class maps of images from a torchvision classifier, segmentation or
detection model, as overlays and arrays (the work is :mod:`loupe.explaining`).

For each image ``NAME.jpg`` and each target it writes ``NAME.METHOD.CLASS.png`` (the whole
image and the map over it, titled with the class, score, method and normalisation, with a
colour bar) and ``NAME.METHOD.CLASS.npz`` (``maps (1, h, w)`` float16 at the model input's
resolution divided by ``peak (1,)``, ``classes (1,)``, ``scores (1,)``), atomically, as each
image is done; detections add ``.boxN``. ``OUT/explain.json`` records the settings and every
image's results; a run with other settings into the same folder is refused.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from loupe.cli.args import (
    LABEL_OFFSET_HELP,
    add_command,
    add_device_argument,
    add_method_arguments,
    add_model_arguments,
    method_options,
)
from loupe.cli.values import fraction, non_negative_int, output_folder, positive_int

if TYPE_CHECKING:  # imported where used: the parser needs no torch
    from loupe.explaining import ExplainConfig, ImageResult

#: The --view choices (loupe.explaining.images.VIEWS, checked by ExplainConfig).
VIEWS = ("whole", "squash", "crop")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "explain", help="class maps of images: overlay PNGs and float16 .npz arrays",
        description="Class maps of images from a torchvision classifier, segmentation model "
        "(deeplabv3_*, fcn_*, lraspp_*) or detection model\n(fasterrcnn_*, retinanet_*, ...): "
        "for each image and target an overlay PNG and the raw map as a float16 .npz,\nwith "
        "the settings in OUT/explain.json.",
        examples=[
            "loupe explain photo.jpg --model resnet50 --weights IMAGENET1K_V1 --topk 2 --out out/",
            "loupe explain photos/ --model resnet50 --weights IMAGENET1K_V1 --method "
            "'shuffle:n_shuffles=16' --target 'tiger cat' 281 --out out/",
            "loupe explain cat.jpg --model mobilenet_v2 --weights mobilenet_v2_imagenet1k_coral"
            ".pth --scale 'x*2-1' --labels imagenet_labels_1001.txt --label-offset 1 --out out/",
        ],
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    group = add_model_arguments(p, runs=False)
    add_method_arguments(group)
    group.add_argument("--target", nargs="+", metavar="CLASS",
                       help="class indices or names to explain in every image; detection "
                       "models: CLASS:N for the class's N-th best box (default: its best)")
    group.add_argument("--topk", type=positive_int, help="explain each image's K best classes "
                       "(segmentation: largest classes; detection: best boxes; default: 1)")
    group.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    add_device_argument(group)
    group.add_argument("--amp", action="store_true", help="run the model under autocast")
    group = p.add_argument_group("input and labels")
    group.add_argument("--view", choices=VIEWS, default="whole",
                       help="what the model sees: the whole image with its shorter side at "
                       "--resize, squashed to --size x --size (fixed-size models such as "
                       "ViTs), or the centre crop")
    group.add_argument("--max-side", type=positive_int, default=1024,
                       help="longest side of the whole view (at least 32)")
    group.add_argument("--size", type=positive_int, help="crop or squash side (default: 224 or "
                       "the weights')")
    group.add_argument("--resize", type=positive_int, help="shorter side of the whole view and "
                       "before the crop (default: size*256/224, or the weights')")
    group.add_argument("--labels", type=Path, help="class names, one per line (default: the "
                       "weights' names, or ImageNet's for 1000-class heads)")
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


def config_of(args: argparse.Namespace) -> ExplainConfig:
    """The :class:`ExplainConfig` of parsed arguments."""
    from loupe.explaining import ExplainConfig
    from loupe.method_specs import method_slug, parse_method_spec

    name, options = method_options(args.method, args.option)
    return ExplainConfig(
        inputs=tuple(args.inputs), out=args.out, model=args.model, weights=args.weights,
        method=name, options=options, method_label=method_slug(*parse_method_spec(args.method)),
        target_layer=args.target_layer, targets=tuple(args.target) if args.target else None,
        topk=args.topk, view=args.view, max_side=args.max_side, size=args.size,
        resize=args.resize, mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None, scale=args.scale, labels=args.labels,
        label_offset=args.label_offset, num_classes=args.num_classes, seed=args.seed,
        patch=args.patch, scores=args.scores, colormap=args.colormap, alpha=args.alpha,
        batch_size=args.batch_size, amp=args.amp, recursive=args.recursive, device=args.device,
    )


def run(args: argparse.Namespace) -> int:
    from loupe.explaining import ExplainRun

    explainer = ExplainRun(config_of(args))
    total, written, skipped = explainer.count, 0, []
    start = time.perf_counter()
    with closing(explainer.results()) as results:
        for done, result in enumerate(results, 1):
            rate = done / max(time.perf_counter() - start, 1e-9)
            print(f"{line_of(result)}  [{done}/{total}, {rate:.2f} img/s]", flush=True)
            written += len(result.outputs)
            if result.skipped:
                skipped.append(result)
    print(f"wrote {written} overlays and map files for {total - len(skipped)} of {total} "
          f"images to {args.out}", flush=True)
    if skipped:
        names = ", ".join(r.path.name for r in skipped[:5]) + (", ..." if len(skipped) > 5
                                                                else "")
        print(f"loupe explain: {len(skipped)} of {total} images skipped ({names}); see the "
              "warnings above", file=sys.stderr)
        return 1
    return 0


def line_of(result: ImageResult) -> str:
    """``a.png: dog (3) 0.412; eel (4) 0.101``, or ``a.png: skipped`` (the warning says why)."""
    if result.skipped:
        return f"{result.path.name}: skipped"
    return f"{result.path.name}: " + ("; ".join(result.titles) or "nothing to explain")
