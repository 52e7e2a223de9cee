"""Faults of the system, not of loupe: a full disk, a read-only folder, an image too large to
decode safely. Every command answers with one line naming the path and the problem, exit
status 1 or 2, never a traceback, and leaves no partial file."""

from __future__ import annotations

import errno
import os
import struct
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

import loupe.io
from loupe.cli import main

from .conftest import SYNTHETIC, save_tiny_run

PROBLEMS = {"full": "No space left on device", "read-only": "Permission denied"}


class _OsWithoutChmod:
    """``os`` for loupe.io, whose chmod does not follow the temp file's link to /dev/full."""

    def __getattr__(self, name: str):
        return getattr(os, name)

    @staticmethod
    def chmod(*args, **kwargs) -> None:
        return None


@pytest.fixture
def fault(monkeypatch):
    """``fault(kind)``: from now on every atomic write of loupe fails as on a full disk (the
    temp file is a link to /dev/full, so the real writer meets ENOSPC) or in a read-only
    folder (creating the temp file fails with EACCES; as root, chmod cannot refuse us)."""

    def mkstemp_full(prefix: str = "", dir: str | None = None, **kwargs):
        fd, name = tempfile.mkstemp(prefix=prefix, dir=dir)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)
        return os.open(os.devnull, os.O_RDONLY), name

    def mkstemp_read_only(prefix: str = "", dir: str | None = None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), dir)

    def start(kind: str) -> None:
        if kind == "full" and not Path("/dev/full").exists():
            pytest.skip("no /dev/full on this system")
        fake = mkstemp_full if kind == "full" else mkstemp_read_only
        monkeypatch.setattr(loupe.io, "tempfile", SimpleNamespace(mkstemp=fake))
        monkeypatch.setattr(loupe.io, "os", _OsWithoutChmod())

    return start


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"loupe {command}: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def files_under(folder: Path) -> list[str]:
    """The files under ``folder`` but ``loupe maps``' empty lock file (``.maps.json.lock``,
    which a maps folder keeps by design: it is no output and holds nothing)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name != ".maps.json.lock")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A tiny classifier run, its maps of four synthetic images, and an evaluation of them."""
    root = tmp_path_factory.mktemp("faults")
    run = save_tiny_run(root / "run")
    maps = root / "maps"
    assert main(["maps", *SYNTHETIC, "--model", str(run), "--limit", "4", "--out",
                 str(maps)]) == 0
    evaluation = root / "eval"
    assert main(["evaluate", "--maps", str(maps), *SYNTHETIC, "--limit", "4", "--bootstrap",
                 "0", "--overlays", "0", "--out", str(evaluation)]) == 0
    return {"run": run, "maps": maps, "eval": evaluation}


def commands(world: dict[str, Path], out: Path) -> dict[str, list[str]]:
    """A command line of each writing command, writing under ``out``."""
    return {
        "maps": ["maps", *SYNTHETIC, "--model", str(world["run"]), "--limit", "2",
                 "--out", str(out)],
        "masks": ["masks", "--maps", str(world["maps"]), "--no-progress", "--out", str(out)],
        "evaluate": ["evaluate", "--maps", str(world["maps"]), *SYNTHETIC, "--limit", "4",
                     "--bootstrap", "0", "--overlays", "0", "--out", str(out)],
        "report": ["report", str(world["eval"]), "--out", str(out / "report.html")],
    }


@pytest.mark.parametrize("kind", ["full", "read-only"])
@pytest.mark.parametrize("command", ["maps", "masks", "evaluate", "report"])
def test_write_faults_are_one_line_naming_the_path(world, tmp_path, capsys, fault, command,
                                                    kind):
    out = tmp_path / "out"
    out.mkdir()
    argv = commands(world, out)[command]
    fault(kind)
    code = main(argv)
    line = one_error_line(capsys, command)
    assert code == 1
    assert PROBLEMS[kind] in line and str(out) in line, line
    assert files_under(out) == []  # nothing partial: the temp files are gone too


def test_explain_on_a_full_disk(tmp_path, capsys, fault):
    from PIL import Image

    Image.new("RGB", (40, 32), (200, 30, 30)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    fault("full")
    code = main(["explain", str(tmp_path / "photo.png"), "--model", "resnet18", "--weights",
                 "random", "--num-classes", "4", "--size", "32", "--device", "cpu",
                 "--out", str(out)])
    line = one_error_line(capsys, "explain")
    assert code == 1 and "No space left on device" in line and str(out) in line
    assert not out.exists() or files_under(out) == []


def test_train_on_a_full_disk(tmp_path, capsys, fault):
    out = tmp_path / "cls"
    fault("full")
    code = main(["train", "--dataset", "synthetic", "--synthetic-train", "4", "--synthetic-val",
                 "2", "--synthetic-size", "32", "--backbone", "small", "--pretrained", "none",
                 "--epochs", "1", "--batch-size", "2", "--crop", "32", "--resize-long", "32",
                 "32", "--device", "cpu", "--no-progress", "--out", str(out)])
    line = one_error_line(capsys, "train")
    assert code == 1 and "No space left on device" in line and str(out) in line, line


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width x height`` (IHDR) with one tiny IDAT: decoders refuse it
    from the header alone, as they must refuse a real decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_one_line_naming_the_file(tmp_path, capsys, tiny_run):
    from PIL import Image

    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(Image.DecompressionBombError):  # what PIL itself says
        Image.open(bomb)
    code = main(["explain", str(bomb), "--model", "resnet18", "--weights", "random",
                 "--num-classes", "4", "--out", str(tmp_path / "explained")])
    line = one_error_line(capsys, "explain")
    assert code == 2 and str(bomb) in line and "decompression bomb" in line, line
    # a data set with one such image among good ones: maps names it and stops
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    Image.new("RGB", (32, 32)).save(folder / "images" / "a.png")
    Image.new("L", (32, 32)).save(folder / "masks" / "a.png")
    png_header_only(folder / "images" / "b.png", 20000, 20000)
    Image.new("L", (32, 32)).save(folder / "masks" / "b.png")
    names = ["background"] + [f"class{k}" for k in range(1, 6)]  # as the tiny run's
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    code = main(["maps", "--dataset", "folder", "--root", str(folder), "--model",
                 str(tiny_run), "--no-progress", "--out", str(tmp_path / "maps")])
    line = one_error_line(capsys, "maps")
    assert code == 2 and str(folder / "images" / "b.png") in line, line
    assert "decompression bomb" in line
