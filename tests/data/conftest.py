"""Fixtures of the data tests: tiny data sets written in the real layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from .layouts import write_voc


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOCdevkit with three 16x16 images (see layouts.VOC_MASKS)."""
    return write_voc(tmp_path)
