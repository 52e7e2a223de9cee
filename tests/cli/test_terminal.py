"""What the command prints around its work: log lines without a rank prefix in a single
process (with one under torchrun), each warning once, Python warnings as one line."""

from __future__ import annotations

import logging
import warnings

from loupe.cli import OncePerMessage, RankFormatter, terminal_logging


def record(message: str, level: int = logging.INFO, name: str = "loupe.x") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_no_rank_prefix_in_a_single_process(monkeypatch):
    formatter = RankFormatter("%(message)s")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert formatter.format(record("12 map files written")) == "12 map files written"
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert formatter.format(record("12 map files written")) == "12 map files written"
    assert formatter.format(record("odd", logging.WARNING)) == "warning: odd"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert formatter.format(record("12 map files written")) == "rank 3: 12 map files written"


def test_each_warning_once_and_every_info_line():
    once = OncePerMessage()
    kept = [once.filter(record(m, level)) for m, level in [
        ("skipping a.png", logging.WARNING), ("skipping a.png", logging.WARNING),
        ("skipping b.png", logging.WARNING), ("step", logging.INFO), ("step", logging.INFO)]]
    assert kept == [True, False, True, True, True]


def test_terminal_logging_prints_one_line_per_distinct_warning(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    bare_root = logging.getLogger()  # without pytest's handlers, as in a fresh loupe process
    monkeypatch.setattr(bare_root, "handlers", [])
    log = logging.getLogger("loupe.test")
    with terminal_logging(verbose=False):
        for _ in range(3):
            log.warning("image %s is tiny", "a.png")
        log.info("done")
        for _ in range(2):
            warnings.warn("a deprecated option", UserWarning, stacklevel=1)
        warnings.warn("a deprecated option", UserWarning, stacklevel=1)  # another line
        log.debug("not shown without -v")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: image a.png is tiny", "done", "warning: a deprecated option"]
    assert bare_root.handlers == []  # restored for the next command
