"""Fixtures of the pipeline tests: a tiny classifier saved as a loupe training run, a folder
data set with images of different sizes, and the synthetic set's command-line options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


# Run as ``python -c GATED_RUN ACTION N ARGS...``: ``loupe ARGS`` with a gate on its ``.npz``
# writes (through loupe.io.atomic_path): ACTION ``kill`` SIGKILLs the process while it writes
# its (N+1)-th map file (the temporary file written, not yet renamed), ``stop`` SIGSTOPs it
# once its N-th is in place. Either way it has written exactly N files, however fast or
# loaded the machine is (a signal sent from outside once files appear may land early or late).
GATED_RUN = """
import contextlib, os, signal, sys
import loupe.io
from loupe.cli import main

action, files, original = sys.argv[1], int(sys.argv[2]), loupe.io.atomic_path
written = 0

@contextlib.contextmanager
def atomic_path(path):
    global written
    is_map = str(path).endswith(".npz")
    with original(path) as tmp:
        yield tmp
        if is_map and action == "kill" and written == files:
            os.kill(os.getpid(), signal.SIGKILL)
    if is_map:
        written += 1
        if action == "stop" and written == files:
            os.kill(os.getpid(), signal.SIGSTOP)

loupe.io.atomic_path = atomic_path
sys.exit(main(sys.argv[3:]))
"""


def _gated(action: str, files: int, args: list[str]) -> list[str]:
    return [python_executable(), "-c", GATED_RUN, action, str(files), *args]


def killed_mid_write(args: list[str], files: int, timeout: float = 300) -> str:
    """Run ``loupe ARGS`` in a subprocess that SIGKILLs itself while writing its
    ``files + 1``-th map file (see :data:`GATED_RUN`). Returns its output; fails unless it
    was killed."""
    process = subprocess.run(_gated("kill", files, args), env=subprocess_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                             check=False)
    output = process.stdout.decode()
    assert process.returncode == -signal.SIGKILL, f"not killed ({process.returncode}):\n{output}"
    return output


@contextmanager
def stopped_after_files(args: list[str], files: int) -> Iterator[subprocess.Popen]:
    """A ``loupe ARGS`` subprocess (text stdout/stderr pipes) that has stopped itself
    (SIGSTOP) once its ``files``-th map file is in place (see :data:`GATED_RUN`); continued
    (SIGCONT) when the block ends, killed when it ends with an error."""
    process = subprocess.Popen(_gated("stop", files, args), env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"ended ({status}) before it wrote {files} files"
        yield process
    except BaseException:
        process.kill()
        process.communicate()
        raise
    process.send_signal(signal.SIGCONT)


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
