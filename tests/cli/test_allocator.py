"""The ``loupe`` command's malloc settings (loupe.cli.allocator): what is set, when nothing is,
that glibc accepts them, and that the executable's entry point sets them before a command."""

from __future__ import annotations

import subprocess
import sys

import pytest

import loupe.cli as cli
from loupe.cli import allocator


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


def test_both_thresholds_are_set_on_glibc():
    libc = FakeLibc()
    assert allocator.tune_malloc({}, "linux", lambda name: libc) is True
    assert libc.calls == [(-3, 32 * 2**20), (-1, 2**30)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


@pytest.mark.parametrize("name", allocator.USER_SETTINGS)
def test_a_users_own_setting_is_left_alone(name):
    libc = FakeLibc()
    assert allocator.tune_malloc({name: "default"}, "linux", lambda _: libc) is False
    assert libc.calls == []


def test_nothing_changes_off_glibc_or_off_linux():
    def missing(name: str) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    assert allocator.tune_malloc({}, "linux", missing) is False
    assert allocator.tune_malloc({}, "linux", lambda name: object()) is False  # no mallopt
    libc = FakeLibc()
    for platform in ("darwin", "win32"):
        assert allocator.tune_malloc({}, platform, lambda name: libc) is False
    assert libc.calls == []
    refused = FakeLibc(answer=0)
    assert allocator.tune_malloc({}, "linux", lambda name: refused) is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_glibc_accepts_the_values():
    code = ("import os; from loupe.cli.allocator import tune_malloc, USER_SETTINGS; "
            "env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}; "
            "print(tune_malloc(env))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_the_executable_sets_them_before_the_command(monkeypatch):
    order: list[str] = []
    monkeypatch.setattr(allocator, "tune_malloc", lambda: order.append("malloc") or True)
    monkeypatch.setattr(cli, "main", lambda: order.append("main") or 3)
    with pytest.raises(SystemExit) as done:
        cli.console()
    assert done.value.code == 3 and order == ["malloc", "main"]
