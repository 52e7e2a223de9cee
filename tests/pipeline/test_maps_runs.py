"""``loupe maps`` runs that must not give stale or silently wrong files (issue 13): a resume
after the weights changed, a larger ``--limit``, two processes on one folder, a settings clash
between two processes, NaN logits or maps, images larger than ``--max-side``."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from loupe.cli import build_parser, main
from loupe.mapsets.files import load_map_file
from loupe.mapsets.generate import multiscale_maps
from loupe.masks import save_mask_png
from loupe.models import load_model

from .conftest import SYNTHETIC, python_executable, read_npz, save_tiny_run, subprocess_env


def maps_args(run: Path, out: Path, *extra: str) -> list[str]:
    return ["maps", *SYNTHETIC, "--model", str(run), "--out", str(out), *extra]


def test_resume_refuses_maps_of_other_weights(tmp_path: Path, capsys) -> None:
    run = save_tiny_run(tmp_path / "run", seed=0)
    out = tmp_path / "maps"
    assert main(maps_args(run, out, "--limit", "2")) == 0
    recorded = json.loads((out / "maps.json").read_text())["model_fingerprint"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", recorded)
    save_tiny_run(run, seed=1)  # new weights at the same path
    (out / sorted(p.name for p in out.glob("*.npz"))[0]).unlink()
    capsys.readouterr()
    assert main(maps_args(run, out, "--limit", "2")) == 2
    err = capsys.readouterr().err
    assert "the model's weights changed" in err and "stale" in err and recorded in err
    assert "use another --out or delete the folder" in err
    assert len(list(out.glob("*.npz"))) == 1  # nothing written next to the old maps


def test_resume_refuses_a_changed_weights_file(tmp_path: Path, capsys) -> None:
    """``--weights FILE``: the fingerprint is the file's sha256 (what sha256sum prints)."""
    import hashlib

    import torchvision

    weights = tmp_path / "w.pt"
    common = ["maps", *SYNTHETIC, "--model", "squeezenet1_1", "--num-classes", "5",
              "--weights", str(weights), "--limit", "1", "--out", str(tmp_path / "maps")]
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(torchvision.models.squeezenet1_1(num_classes=5).state_dict(), weights)
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if seed == 0:
            assert main(common) == 0
            described = json.loads((tmp_path / "maps" / "maps.json").read_text())
            assert described["model_fingerprint"] == f"sha256:{digest}"
        else:
            assert main(common) == 2
            assert f"-> 'sha256:{digest}'" in capsys.readouterr().err


def test_a_run_extends_to_a_larger_limit(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "maps"
    assert main(maps_args(tiny_run, out, "--limit", "2")) == 0
    first = {p.name: p.read_bytes() for p in out.glob("*.npz")}
    capsys.readouterr()
    assert main(maps_args(tiny_run, out, "--limit", "4")) == 0
    assert "maps: 2 written, 2 already" in capsys.readouterr().out
    assert all((out / name).read_bytes() == data for name, data in first.items())
    assert json.loads((out / "maps.json").read_text())["extent"] == {"images": 4}
    assert main(maps_args(tiny_run, out, "--limit", "3")) == 0  # a smaller one: all there
    assert "maps: 0 written, 3 already" in capsys.readouterr().out
    assert json.loads((out / "maps.json").read_text())["extent"] == {"images": 4}
    reference = tmp_path / "reference"
    assert main(maps_args(tiny_run, reference, "--limit", "4")) == 0
    assert all((reference / p.name).read_bytes() == p.read_bytes() for p in out.glob("*.npz"))


def test_a_chunk_claimed_by_another_process_is_left_to_it(tiny_run: Path, tmp_path: Path,
                                                          capsys) -> None:
    """The test process holds chunk 0 as a second ``loupe maps`` would while computing it;
    the run does the other chunks; once released, a rerun does chunk 0."""
    from loupe.mapsets.locks import try_claim

    out = tmp_path / "maps"
    out.mkdir()
    held = try_claim(out / ".chunk-0-1.lock")
    assert held is not None
    try:
        assert main(maps_args(tiny_run, out, "--batch-size", "2")) == 0
        assert "maps: 4 written, 0 already" in capsys.readouterr().out
        assert len(list(out.glob("*.npz"))) == 4
    finally:
        held.release(finished=False)
    assert main(maps_args(tiny_run, out, "--batch-size", "2")) == 0
    assert "maps: 2 written, 4 already" in capsys.readouterr().out
    assert not list(out.glob(".chunk-*"))


WORK = ["--dataset", "synthetic", "--synthetic-train", "6", "--synthetic-size", "32",
        "--method", "smoothgrad", "--option", "n_samples=64", "seed=0", "--batch-size", "1",
        "--no-progress"]


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX SIGSTOP/SIGCONT")
def test_two_processes_on_one_folder_share_the_work(tiny_run: Path, tmp_path: Path,
                                                   capsys) -> None:
    """A second run (this process) joins a first one (a subprocess) part way: together they
    compute every image exactly once, and the files are those of a run alone. The first is
    paused (SIGSTOP) once it has written a file and resumed after the second has finished,
    so that both do some of the work however fast the machine is."""
    build_parser()  # import every subcommand now
    out = tmp_path / "maps"
    first = subprocess.Popen([python_executable(), "-m", "loupe", "maps", *WORK, "--model",
                              str(tiny_run), "--out", str(out)], env=subprocess_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while first.poll() is None and time.monotonic() < deadline and not list(
                out.glob("*.npz")):
            time.sleep(0.001)
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "the first run ended before the second could join"
        assert len(list(out.glob("*.npz"))) < 6, "the first run was done before it paused"
        assert main(["maps", *WORK, "--model", str(tiny_run), "--out", str(out)]) == 0
        first.send_signal(signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
    assert first.returncode == 0, stderr
    written = [int(re.search(r"maps: (\d+) written", text).group(1))
               for text in (stdout, capsys.readouterr().out)]
    assert sum(written) == 6 and min(written) > 0, written  # each image once; both worked
    assert len(list(out.glob("*.npz"))) == 6 and not list(out.glob(".chunk-*"))
    reference = tmp_path / "reference"
    assert main(["maps", *WORK, "--model", str(tiny_run), "--out", str(reference)]) == 0
    for path in reference.glob("*.npz"):
        assert (out / path.name).read_bytes() == path.read_bytes()


def waits_for_lock(pid: int, lock: Path) -> bool:
    """Whether process ``pid`` is blocked on the flock of ``lock`` (Linux ``/proc/locks``)."""
    inode = f":{lock.stat().st_ino} "
    return any("->" in line and f" {pid} " in line and inode in line
               for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="needs Linux /proc/locks")
def test_a_settings_clash_between_two_processes_cannot_race(tiny_run: Path, tmp_path: Path
                                                            ) -> None:
    """Process A (this test) holds the run-description lock between its check and its
    write; process B (another method) has checked before A writes, so without the lock both
    would pass and mix their maps. With it B waits, then finds A's settings and refuses."""
    import fcntl

    other = tmp_path / "other"
    assert main(maps_args(tiny_run, other, "--limit", "1", "--method", "layercam")) == 0
    out = tmp_path / "maps"
    out.mkdir()
    lock = out / ".maps.json.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        b = subprocess.Popen([python_executable(), "-m", "loupe", *maps_args(tiny_run, out)],
                             env=subprocess_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while b.poll() is None and time.monotonic() < deadline and not waits_for_lock(b.pid,
                                                                                     lock):
            time.sleep(0.1)
        assert b.poll() is None, "B finished without waiting for the lock"
        shutil.copy(other / "maps.json", out / "maps.json")  # A writes its description
    _, err = b.communicate(timeout=300)
    assert b.returncode == 2, err
    assert "other settings" in err and "'layercam' -> 'gradcam'" in err
    assert not list(out.glob("*.npz"))


def nan_patch(tmp_path: Path, kind: str) -> str:
    """A ``--patch`` that makes the logits NaN, or keeps them finite but makes every input
    gradient NaN (``+ sum(sqrt(0 * x))``: its gradient is ``inf * 0``)."""
    body = {"logits": "out * float('nan')",
            "gradients": "out + torch.sqrt(x * 0).sum()"}[kind]
    (tmp_path / f"{kind}.py").write_text(f"""import torch

class Broken(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return {body}

def patch(model):
    return Broken(model)
""")
    return f"{tmp_path / kind}.py:patch"


@pytest.mark.parametrize("kind", ["logits", "gradients"])
def test_nan_logits_or_maps_are_refused_naming_the_image(tmp_path: Path, capsys, kind: str
                                                         ) -> None:
    from loupe.data.synthetic import make_synthetic

    out = tmp_path / "maps"
    args = ["maps", *SYNTHETIC, "--model", "resnet18", "--weights", "random", "--num-classes",
            "5", "--patch", nan_patch(tmp_path, kind), "--method", "saliency", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    first = make_synthetic(6, 32, 0).ids[0]
    assert f"image {first!r}" in err and "NaN" in err
    assert ("logits" if kind == "logits" else "saliency maps") in err
    assert not list(out.glob("*.npz"))


def test_images_larger_than_max_side_are_explained_smaller(tiny_run: Path, tmp_path: Path,
                                                            caplog) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "class_names.txt").write_text("background\n" + "".join(f"class{k}\n"
                                                                 for k in range(1, 6)))
    g = torch.Generator().manual_seed(0)
    for name, (w, h) in {"big": (200, 120), "small": (40, 30)}.items():
        pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(root / "images" / f"{name}.png")
        mask = torch.zeros(h, w, dtype=torch.long)
        mask[: h // 2, : w // 2] = 2
        save_mask_png(root / "masks" / f"{name}.png", mask)
    out = tmp_path / "maps"
    caplog.set_level(logging.WARNING)
    assert main(["maps", "--dataset", "folder", "--root", str(root), "--model", str(tiny_run),
                 "--max-side", "64", "--no-progress", "--out", str(out)]) == 0
    warnings = [r.getMessage() for r in caplog.records if "--max-side" in r.getMessage()]
    assert len(warnings) == 1 and "'big', 200x120" in warnings[0]
    assert json.loads((out / "maps.json").read_text())["max_side"] == 64
    maps, classes = load_map_file(out / "big.npz")
    assert maps.shape == (1, 120, 200) and classes.tolist() == [2]
    model, _ = load_model(tiny_run)
    pixels = torch.from_numpy(np.array(Image.open(root / "images" / "big.png")))
    x = F.interpolate(pixels.permute(2, 0, 1)[None].float() / 255, size=(38, 64),
                      mode="bilinear", align_corners=False, antialias=True)
    expected = multiscale_maps(model, (x - 0.5) / 0.25, torch.tensor([[1]]), "gradcam",
                               [(120, 200)])[0]
    stored = read_npz(out / "big.npz")
    restored = stored["maps"].astype(np.float32) * stored["peak"][:, None, None]
    np.testing.assert_allclose(restored, expected.numpy(), rtol=2e-3,
                               atol=2e-3 * float(expected.abs().max()))
    assert load_map_file(out / "small.npz")[0].shape == (1, 30, 40)  # not resized


def test_multiscale_maps_report_progress_over_scales_and_flips(tiny_run: Path) -> None:
    """``loupe maps`` moves its bar (images, images per second) inside a batch: the
    callback hears every chunk of every scale, and ends at the batch's image count."""
    model, _ = load_model(tiny_run)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calls: list[float] = []
    multiscale_maps(model, x, torch.tensor([[0], [1], [2]]), "smoothgrad", [(32, 32)] * 3,
                    scales=(1.0, 0.5), flip=True, options={"n_samples": 4, "chunk_size": 4},
                    progress=calls.append)
    # per scale: 6 rows (3 images and their flips) x 4 samples in chunks of 4, then the end
    assert len(calls) == 2 * (6 + 1)
    assert calls == sorted(calls) and calls[-1] == pytest.approx(3.0)
    assert calls[6] == pytest.approx(1.5)  # the first scale done: half of the work

