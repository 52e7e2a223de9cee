"""``loupe maps`` as a user sees it on a terminal (the CLI's own stderr handler, not
pytest's): its log lines carry no ``rank 0:`` in a single process, and the summary is one
line."""

from __future__ import annotations

from pathlib import Path

from loupe.cli import main
from tests.conftest import bare_root_logger

from .conftest import SYNTHETIC


def test_single_process_maps_prints_no_rank_prefix(tiny_run: Path, tmp_path: Path, capsys,
                                                   monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with bare_root_logger():
        code = main(["maps", *SYNTHETIC, "--model", str(tiny_run), "--limit", "2", "--device",
                     "cpu", "--out", str(tmp_path / "maps")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "2 map files written, 0 already there" in err  # the log line is shown
    assert "rank" not in err + out
    assert out.strip() == f"maps: 2 written, 0 already in {tmp_path / 'maps'}"
