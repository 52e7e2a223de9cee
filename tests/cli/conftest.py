"""Shared pieces of the ``loupe explain`` tests: a seeded 10-class resnet18 state dict with a
labels file and three small images (the ``world`` fixture), the command line around them, and
the one-line error check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loupe.cli import main
from loupe.models import random_model

NAMES = ["background", "ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_image(path: Path, width: int, height: int, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=g)
    Image.fromarray(pixels.numpy(), "RGB").save(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A seeded 10-class resnet18 state dict, a labels file whose line 0 is background, and a
    folder with three small images (one not square, one JPEG)."""
    root = tmp_path_factory.mktemp("explain")
    model = random_model("resnet18", num_classes=10, seed=0)
    torch.save(model.state_dict(), root / "r18.pth")
    (root / "labels.txt").write_text("\n".join(NAMES) + "\n")
    images = root / "images"
    images.mkdir()
    write_image(images / "a.png", 32, 32, 1)
    write_image(images / "b.jpg", 48, 40, 2)
    write_image(images / "c.png", 32, 36, 3)
    return {"root": root, "weights": root / "r18.pth", "labels": root / "labels.txt",
            "images": images}


def base_args(world: dict[str, Path], out: Path, *inputs: object) -> list[str]:
    return [
        "explain", *(str(i) for i in (inputs or [world["images"]])),
        "--model", "resnet18", "--weights", str(world["weights"]),
        "--size", "32", "--resize", "32", "--device", "cpu",
        "--labels", str(world["labels"]), "--label-offset", "1", "--out", str(out),
    ]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_error(capsys, args: list[str], *fragments: str) -> None:
    code, _, stderr = run_cli(args, capsys)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loupe explain: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def raw_maps(data: dict[str, np.ndarray]) -> np.ndarray:
    """The raw maps of an explain ``.npz``: ``maps * peak``, float32."""
    return data["maps"].astype(np.float32) * data["peak"][:, None, None]
