"""Atomic writes: complete file or nothing, ordinary permissions."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from loupe.io import atomic_path, load_npz, save_npz, save_torch, write_json


def test_save_npz_round_trips_with_ordinary_mode(tmp_path):
    path = tmp_path / "a.npz"
    maps = np.array([[0.5, -1.25, 3.0], [65504.0, 0.0, -0.001]], np.float16)
    classes = np.array([3, 7], np.int64)
    save_npz(path, maps=maps, classes=classes)
    loaded = load_npz(path)
    assert sorted(loaded) == ["classes", "maps"]
    assert loaded["maps"].dtype == np.float16 and loaded["classes"].dtype == np.int64
    assert np.array_equal(loaded["maps"], maps) and np.array_equal(loaded["classes"], classes)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def _fail_part_way(handle, *args, **kwargs):
    handle.write(b"PK\x03\x04 half a zip file")
    raise OSError("disk full")


WRITES = {
    "save_npz": lambda path: save_npz(path, maps=np.zeros(2)),
    "save_torch": lambda path: save_torch(path, {"a": torch.zeros(2)}),
    "write_json": lambda path: write_json(path, {"a": 1}),
}


@pytest.mark.parametrize("writer", sorted(WRITES))
def test_an_error_inside_a_write_keeps_the_old_file(tmp_path, monkeypatch, writer):
    """Deterministic, unlike a kill at a random moment: the serializer writes part of the
    file and fails; the old file is intact and no partial or temporary file is left."""
    path = tmp_path / "out.bin"
    path.write_bytes(b"the old file")
    monkeypatch.setattr(np, "savez", _fail_part_way)
    monkeypatch.setattr(torch, "save", lambda obj, handle: _fail_part_way(handle))
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _fail_part_way(
        open(self, "wb")))
    with pytest.raises(OSError, match="disk full"):
        WRITES[writer](path)
    assert path.read_bytes() == b"the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
