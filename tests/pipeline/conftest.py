"""Fixtures of the pipeline tests: a tiny classifier saved as a loupe training run, a folder
data set with images of different sizes, and the synthetic set's command-line options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loupe.masks import save_mask_png
from loupe.models import build_classifier, save_model

NUM_OBJECT_CLASSES = 5  # the synthetic set's default; data-set classes 0..5, 0 = background

SYNTHETIC = ["--dataset", "synthetic", "--synthetic-train", "6", "--synthetic-size", "32",
             "--no-progress"]


def python_executable() -> str:
    """The interpreter running the tests (the project's virtual environment)."""
    return sys.executable


def subprocess_env() -> dict[str, str]:
    """Environment of CLI subprocesses: one thread each (the machine is shared), no GPU."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONUNBUFFERED="1")
    return env


def kill_when(command: list[str], ready: Callable[[], bool], timeout: float = 300) -> None:
    """Run ``command`` and SIGKILL it as soon as ``ready()`` holds (polled every 5 ms); fails
    when the process ended before that."""
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None and not ready():
            time.sleep(0.005)
        assert process.poll() is None, (
            "the run ended before it could be killed:\n" + process.stdout.read().decode()
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL


def save_tiny_run(folder: Path, num_classes: int = NUM_OBJECT_CLASSES, seed: int = 0) -> Path:
    """A seeded random ``small`` classifier (VGG-style GAP net, output stride 8) written as
    ``loupe train`` writes it: ``model.pt`` + ``model.json`` (label offset 1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier("small", num_classes)
    spec = {
        "kind": "classifier",
        "model": {"backbone": "small", "num_classes": num_classes, "head": "auto",
                  "output_stride": 16},
        "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "class_names": [f"class{k}" for k in range(1, num_classes + 1)],
        "label_offset": 1,
        "input_size": 32,
    }
    save_model(folder, model, spec)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_run(tmp_path_factory.mktemp("tiny-run"))


FOLDER_SIZES = {"a": (40, 32), "b": (32, 32), "c": (32, 48), "d": (40, 32), "e": (24, 24)}
"""Image id -> (width, height) of the folder data set."""


def write_folder_dataset(root: Path, seed: int = 0) -> Path:
    """A ``folder`` data set: five images of different sizes, index masks with random
    rectangles of classes 1..5 (and a 255 border on one), ``class_names.txt``."""
    g = torch.Generator().manual_seed(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    names = ["background"] + [f"class{k}" for k in range(1, NUM_OBJECT_CLASSES + 1)]
    (root / "class_names.txt").write_text("\n".join(names) + "\n")
    for i, (sample_id, (w, h)) in enumerate(FOLDER_SIZES.items()):
        pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(pixels.numpy(), "RGB").save(root / "images" / f"{sample_id}.png")
        mask = torch.zeros(h, w, dtype=torch.long)
        for _ in range(1 + i % 2):
            label = int(torch.randint(1, NUM_OBJECT_CLASSES + 1, (1,), generator=g))
            x0, y0 = (int(v) for v in torch.randint(0, 12, (2,), generator=g))
            mask[y0:y0 + h // 2, x0:x0 + w // 2] = label
        if i == 0:
            mask[0, :] = 255
        save_mask_png(root / "masks" / f"{sample_id}.png", mask)
    return root


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("folder-data"))


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}
