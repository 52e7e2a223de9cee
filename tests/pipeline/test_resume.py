"""Resumability: a ``python -m loupe maps`` process killed with SIGKILL part way, then rerun,
leaves exactly the files of an uninterrupted run, byte for byte, and no temporary files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loupe.cli import main

from .conftest import kill_when, python_executable, tree_bytes

IMAGES = 16
# Heavy enough per image (2 scales x 2 flips x 4 noisy samples) that the kill lands part way.
WORK = ["--dataset", "synthetic", "--synthetic-train", str(IMAGES), "--synthetic-size", "32",
        "--method", "smoothgrad", "--option", "n_samples=4", "seed=0",
        "--scales", "1.0", "1.5", "--flip", "--batch-size", "4", "--no-progress"]


@pytest.fixture
def one_thread():
    """The subprocess runs with one thread; the in-process runs do too, so that every file
    comes from the same kernels."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_killed_run_resumes_to_identical_files(tiny_run: Path, tmp_path: Path, one_thread
                                               ) -> None:
    killed = tmp_path / "killed"
    command = [python_executable(), "-m", "loupe", "maps", *WORK, "--model", str(tiny_run),
               "--out", str(killed)]
    kill_when(command, lambda: len(list(killed.glob("*.npz"))) >= 2)
    done = len(list(killed.glob("*.npz")))
    assert 0 < done < IMAGES, f"{done} of {IMAGES} files before the kill"

    assert main(["maps", *WORK, "--model", str(tiny_run), "--out", str(killed)]) == 0
    reference = tmp_path / "reference"
    assert main(["maps", *WORK, "--model", str(tiny_run), "--out", str(reference)]) == 0

    resumed, expected = tree_bytes(killed), tree_bytes(reference)
    assert len(expected) == IMAGES + 2  # the maps, maps.json and its (empty) lock file
    assert sorted(resumed) == sorted(expected)
    different = [name for name in expected if resumed[name] != expected[name]]
    assert not different, f"files differ from the uninterrupted run: {different}"
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name]
    assert not list(killed.glob(".chunk-*.lock"))  # the killed run's claim was taken over
