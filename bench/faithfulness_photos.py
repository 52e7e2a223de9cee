"""A faithfulness table on real photos: the shared ImageNet MobileNetV2 (TF preprocessing,
``tf_same_padding``) on ``photos/*`` (224x224, squashed), top-1 class of each photo.

A check that the metrics order methods sensibly on real data (a model-free centre blob and a
trained-model method should separate), not the docs table (that comes with the CLI).

    python bench/faithfulness_photos.py --methods gradcam saliency baseline-gaussian
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from loupe.io import atomic_path
from loupe.metrics.faithfulness import faithfulness_table
from loupe.models import apply_patch, model_from_state_dict

REPO = Path(__file__).resolve().parents[1]


def photos(root: Path, size: int) -> tuple[torch.Tensor, list[str]]:
    paths = sorted(p for p in (root / "photos").iterdir()
                   if p.suffix in (".jpg", ".png") and not p.name.startswith(("LICENSE", "COPY")))
    images = []
    for path in paths:
        image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        images.append(pil_to_tensor(image).float() / 255 * 2 - 1)  # TF: x * 2 - 1
    return torch.stack(images), [p.name for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=Path,
                        default=Path(os.environ.get("LOUPE_ASSETS", REPO.parent / "shared"
                                                    / "assets")))
    parser.add_argument("--methods", nargs="+", default=["gradcam", "saliency",
                                                         "baseline-gaussian"])
    parser.add_argument("--metrics", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    weights = args.assets / "weights"
    model = model_from_state_dict("mobilenet_v2", weights / "mobilenet_v2_imagenet1k_coral.pth")
    model = apply_patch(model, f"{weights / 'tf_same_padding.py'}:tf_same_padding")
    images, names = photos(args.assets, 224)
    start = time.perf_counter()
    table = faithfulness_table(
        model, images, methods=args.methods, metrics=args.metrics, batch_size=8,
        metric_options={"deletion": {"steps": args.steps}, "insertion": {"steps": args.steps}},
    )
    seconds = time.perf_counter() - start
    lines = [
        f"MobileNetV2 (coral ImageNet weights) on {len(names)} photos ({', '.join(names)}), "
        f"top-1 targets, {seconds:.0f} s, load {os.getloadavg()[0]:.1f}; mean [95% bootstrap "
        "interval over images]",
        "",
        "| method | " + " | ".join(table.metrics) + " |",
        "|---|" + "---:|" * len(table.metrics),
    ]
    for method in table.methods:
        cells = []
        for metric in table.metrics:
            interval = table.intervals[method, metric]
            cells.append("n/a" if interval is None else
                         f"{interval.observed:.3f} [{interval.low:.3f}, {interval.high:.3f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
