"""Resumability: a ``loupe maps`` process killed with SIGKILL part way (while it writes a map
file), then rerun, leaves exactly the files of an uninterrupted run, byte for byte, and no
temporary files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loupe.cli import main

from .conftest import killed_mid_write, tree_bytes

IMAGES = 8
FINISHED = 5  # killed while writing the 6th file: chunk 0 done, chunk 1 part way, one untouched
# Seeded noise at two scales and flips: the resumed images must match an uninterrupted run's.
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


def test_killed_run_resumes_to_identical_files(tiny_run: Path, tmp_path: Path, one_thread,
                                               capsys) -> None:
    killed = tmp_path / "killed"
    killed_mid_write(["maps", *WORK, "--model", str(tiny_run), "--out", str(killed)], FINISHED)
    assert len(list(killed.glob("*.npz"))) == FINISHED
    assert len([p for p in killed.iterdir() if ".tmp-" in p.name]) == 1  # the file it was writing
    assert list(killed.glob(".chunk-*.lock"))  # the claim it held

    capsys.readouterr()
    assert main(["maps", *WORK, "--model", str(tiny_run), "--out", str(killed)]) == 0
    assert f"maps: {IMAGES - FINISHED} written, {FINISHED} already" in capsys.readouterr().out
    reference = tmp_path / "reference"
    assert main(["maps", *WORK, "--model", str(tiny_run), "--out", str(reference)]) == 0

    resumed, expected = tree_bytes(killed), tree_bytes(reference)
    assert len(expected) == IMAGES + 2  # the maps, maps.json and its (empty) lock file
    assert sorted(resumed) == sorted(expected)
    different = [name for name in expected if resumed[name] != expected[name]]
    assert not different, f"files differ from the uninterrupted run: {different}"
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name]
    assert not list(killed.glob(".chunk-*.lock"))  # the killed run's claim was taken over
