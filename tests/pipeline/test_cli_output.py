"""``loupe maps`` as a user runs it (a subprocess): its log lines carry no ``rank 0:`` in a
single process, and the summary is one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import SYNTHETIC, python_executable, subprocess_env


def test_single_process_maps_prints_no_rank_prefix(tiny_run: Path, tmp_path: Path) -> None:
    env = subprocess_env()
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(
        [python_executable(), "-m", "loupe", "maps", *SYNTHETIC, "--model", str(tiny_run),
         "--limit", "2", "--device", "cpu", "--out", str(tmp_path / "maps")],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 map files written, 0 already there" in done.stderr  # the log line is shown
    assert "rank" not in done.stderr + done.stdout
    assert done.stdout.strip() == f"maps: 2 written, 0 already in {tmp_path / 'maps'}"
