"""Atomic writes: complete file or nothing, ordinary permissions."""

import os

import numpy as np
import pytest

from loupe.io import atomic_path, load_npz, save_npz


def test_save_npz_round_trips_with_ordinary_mode(tmp_path):
    path = tmp_path / "a.npz"
    save_npz(path, maps=np.ones((2, 3), np.float16))
    assert load_npz(path)["maps"].dtype == np.float16
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
