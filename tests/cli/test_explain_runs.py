"""``loupe explain`` runs as a researcher meets them (issue 13): the record ``explain.json`` and
re-runs into the same folder, the output folder checked first, damaged and tiny images
skipped, NaN refused, progress flushed per image and Ctrl-C keeping finished images, ImageNet
names by default, the whole image with a colour bar, ``--max-side`` and the views."""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from loupe.data.imagenet import default_class_names, imagenet_class_names
from loupe.explaining.outputs import figure_subtitle
from loupe.io import load_npz, read_json
from loupe.reports.overlay import explanation_figure
from tests.cli.conftest import assert_error, base_args, run_cli, write_image

REPO = Path(__file__).resolve().parents[2]


def outputs_of(out: Path, stem: str) -> list[str]:
    return read_json(out / "explain.json")["images"][stem]["outputs"]


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "explain.json"}


# -- explain.json and re-runs ----------------------------------------------------------------

def test_reruns_keep_other_targets_and_methods_and_refuse_other_settings(world, tmp_path,
                                                                        capsys):
    out, image = tmp_path / "out", world["images"] / "a.png"
    args = base_args(world, out, image)
    assert run_cli(args + ["--target", "3"], capsys)[0] == 0
    assert run_cli(args + ["--target", "4"], capsys)[0] == 0  # another target: kept beside
    assert run_cli(args + ["--target", "3", "--method", "saliency"], capsys)[0] == 0
    smooth = ["--target", "3", "--method", "smoothgrad", "--option", "n_samples=2"]
    assert run_cli(args + smooth, capsys)[0] == 0
    before = files(out)
    assert sorted(before) == sorted(f"a.{m}.{c}.{x}" for m, c in (
        ("gradcam", 3), ("gradcam", 4), ("saliency", 3), ("smoothgrad", 3)) for x in ("npz", "png"))
    record = read_json(out / "explain.json")
    assert record["settings"]["fingerprint"].startswith("sha256:")
    assert record["settings"]["preprocessing"]["view"] == "whole"
    assert record["methods"]["smoothgrad"] == {"options": {"n_samples": 2},
                                               "target_layer": "auto"}
    assert record["outputs"]["a.saliency.3"]["name"] == "dog"
    assert record["images"]["a"]["outputs"] == [
        "a.gradcam.3", "a.gradcam.4", "a.saliency.3", "a.smoothgrad.3"]
    assert sorted(record["outputs"]) == sorted(n[:-4] for n in before if n.endswith(".npz"))

    # the same method with another option, and other weights: refused, nothing rewritten
    smooth[-1] = "n_samples=3"
    assert_error(capsys, args + smooth, str(out / "explain.json"), "other smoothgrad settings",
                 "n_samples")
    other = tmp_path / "other.pth"
    state = torch.load(world["weights"], weights_only=True)
    state["fc.bias"][0] += 1.0
    torch.save(state, other)
    args[args.index("--weights") + 1] = str(other)
    assert_error(capsys, args + ["--target", "3"], "other settings", "fingerprint")
    assert files(out) == before
    assert read_json(out / "explain.json") == record


@pytest.mark.parametrize("case", ["file", "under-a-file", "read-only"])
def test_out_is_checked_before_the_model_is_loaded(world, tmp_path, capsys, monkeypatch, case):
    import loupe.explaining.run as explaining_run

    def no_model(config):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(explaining_run, "load_model", no_model)
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    # checked when the arguments are parsed (loupe.cli.values.output_folder)
    if case == "file":
        out, problem = blocker, f"{blocker} is a file, not a folder"
    elif case == "under-a-file":
        out, problem = blocker / "maps", f"{blocker} is a file, not a folder"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out = tmp_path / "locked"
        problem = f"{out}: cannot write there (permission denied)"
        out.mkdir(mode=0o555)
    assert_error(capsys, base_args(world, out), "argument --out: ", problem)


def test_the_library_checks_out_too(tmp_path):
    # ExplainRun (the API, no argparse in front) probes --out itself before loading a model
    from loupe.explaining.outputs import check_writable

    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    with pytest.raises(ValueError, match=f"--out {blocker}: exists and is not a folder"):
        check_writable(blocker)
    with pytest.raises(ValueError, match=r"cannot write there \(Not a directory\)"):
        check_writable(blocker / "maps")
    check_writable(tmp_path / "new" / "deep")
    assert (tmp_path / "new" / "deep").is_dir() and not any((tmp_path / "new" / "deep").iterdir())


# -- images that cannot be explained ---------------------------------------------------------

def test_damaged_images_are_skipped_and_the_run_goes_on(world, tmp_path, capsys, caplog):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    shutil.copy(world["images"] / "a.png", folder / "a.png")
    shutil.copy(world["images"] / "c.png", folder / "c.png")
    jpeg = (world["images"] / "b.jpg").read_bytes()
    (folder / "header.jpg").write_bytes(jpeg[:100])  # fails when the header is read
    (folder / "pixels.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])  # fails when decoded
    with caplog.at_level(logging.WARNING):
        code, stdout, stderr = run_cli(base_args(world, out, folder) + ["--batch-size", "2"],
                                       capsys)
    assert code == 1
    assert stderr.strip().splitlines()[-1].startswith(
        "loupe explain: 2 of 4 images skipped (header.jpg, pixels.jpg)")
    for name in ("header.jpg", "pixels.jpg"):
        assert any(str(folder / name) in r.message for r in caplog.records
                   if r.levelno == logging.WARNING)
        assert f"{name}: skipped  [" in stdout
    for stem in "ac":  # the others are written, pixels.jpg's batch companion a.png included
        (name,) = outputs_of(out, stem)
        maps = load_npz(out / f"{name}.npz")["maps"]
        assert maps.shape[0] == 1 and np.isfinite(maps).all() and maps.max() > 0
    images = read_json(out / "explain.json")["images"]
    assert sorted(images) == ["a", "c", "pixels"]  # header.jpg never got a name
    assert images["pixels"]["skipped"].startswith(f"{folder / 'pixels.jpg'}: cannot read image")
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary files


def test_an_image_smaller_than_the_layer_map_is_refused(world, tmp_path, capsys, caplog):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    shutil.copy(world["images"] / "a.png", folder / "a.png")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "dot.png")
    args = base_args(world, out, folder)
    args[args.index("--resize") + 1] = "64"  # layer4's map is 2x2 at 64 pixels
    args[args.index("--size") + 1] = "64"
    with caplog.at_level(logging.WARNING):
        code, stdout, stderr = run_cli(args, capsys)
    assert code == 1 and "1 of 2 images skipped (dot.png)" in stderr
    message = (f"{folder / 'dot.png'}: 1x1 pixels is smaller than the 2x2 map of "
               "--target-layer layer4")
    assert "dot.png: skipped  [" in stdout
    assert any(message in r.message for r in caplog.records)
    assert "target_layer=" not in stdout + stderr + caplog.text
    assert [p.name.split(".")[0] for p in out.glob("*.npz")] == ["a"]
    # an input method needs no layer: the dot is explained, with a warning that it was enlarged
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, _, _ = run_cli(args + ["--method", "saliency"], capsys)
    assert code == 0
    (name,) = outputs_of(out, "dot")
    assert load_npz(out / f"{name}.npz")["maps"].shape == (1, 64, 64)
    assert any("dot.png: 1x1 pixels, enlarged 64x" in r.message for r in caplog.records)


def nan_gradients_patch(path: Path) -> str:
    path.write_text(
        "import torch\n"
        "class NanGrad(torch.autograd.Function):\n"
        "    @staticmethod\n"
        "    def forward(ctx, x):\n"
        "        return x.clone()\n"
        "    @staticmethod\n"
        "    def backward(ctx, g):\n"
        "        return g * float('nan')\n"
        "class Before(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return NanGrad.apply(x)\n"
        "def nan_grads(model):\n"
        "    model.fc = torch.nn.Sequential(Before(), model.fc)\n"
        "def nan_logits(model):\n"
        "    model.register_forward_hook(lambda m, i, out: out * float('nan'))\n"
    )
    return str(path)


@pytest.mark.parametrize(("case", "fragment"), [
    ("weights", "weight tensors hold NaN or Inf (e.g. layer4.0.conv1.weight)"),
    ("nan_logits", "gives NaN or Inf outputs for"),
    ("nan_grads", "gives NaN or Inf gradcam maps for"),
])
def test_nan_is_refused_naming_the_model_and_weights(world, tmp_path, capsys, case, fragment):
    out = tmp_path / "out"
    args = base_args(world, out, world["images"] / "a.png")
    weights = world["weights"]
    if case == "weights":
        state = torch.load(weights, weights_only=True)
        state["layer4.0.conv1.weight"][0, 0, 0, 0] = float("nan")
        weights = tmp_path / "nan.pth"
        torch.save(state, weights)
        args[args.index("--weights") + 1] = str(weights)
    else:
        args += ["--patch", f"{nan_gradients_patch(tmp_path / 'nan.py')}:{case}"]
    assert_error(capsys, args, f"--model resnet18 with --weights {weights}"
                 if case != "weights" else f"--model resnet18 --weights {weights}", fragment)
    assert not list(out.glob("*.npz")) and not list(out.glob("*.png"))


# -- many images: lines flushed as each image is written; Ctrl-C keeps them -------------------

GATE = """\
import time

def hold_second_image(model):
    def hook(module, inputs):
        if inputs[0].shape[-1] == 64:  # the second image's view: wait for Ctrl-C
            for _ in range(6000):
                time.sleep(0.05)
    model.register_forward_pre_hook(hook)
"""


def test_progress_is_flushed_per_image_and_ctrl_c_keeps_finished_images(world, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    shutil.copy(world["images"] / "a.png", folder / "a.png")
    write_image(folder / "b.png", 64, 32, 5)  # seen at 32x64: held by the patch
    (tmp_path / "gate.py").write_text(GATE)
    args = base_args(world, out, folder) + ["--batch-size", "1", "--patch",
                                           f"{tmp_path / 'gate.py'}:hold_second_image"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    # SIGINT at its default in the child: a job started in the background (nohup, `&`)
    # ignores it, and Python then keeps it ignored, so Ctrl-C could not be tested
    process = subprocess.Popen([sys.executable, "-m", "loupe", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=240), "no line while the second image is held: unflushed"
        first = process.stdout.readline()
        assert first.startswith("a.png: ") and "[1/2," in first and "img/s]" in first
        (name,) = outputs_of(out, "a")  # written, and recorded, before the run ends
        assert (out / f"{name}.npz").is_file() and (out / f"{name}.png").is_file()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130 and "interrupted" in stderr
    assert list(read_json(out / "explain.json")["images"]) == ["a"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["explain.json", f"{name}.npz", f"{name}.png"])


# -- class names, overlays, sizes ------------------------------------------------------------

def test_imagenet_names_ship_with_the_package():
    expected = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert list(imagenet_class_names()) == expected
    assert default_class_names(1000)[282] == "tiger cat"
    assert default_class_names(1001)[:2] == ("background", "tench")
    assert default_class_names(10) is None and default_class_names(None) is None


def test_imagenet_sized_heads_get_imagenet_names_and_labels_override_them(world, tmp_path,
                                                                          capsys):
    image = world["images"] / "a.png"
    args = ["explain", str(image), "--model", "resnet18", "--weights", "random", "--size", "32",
            "--resize", "32", "--device", "cpu", "--target", "tiger cat", "--out"]
    code, stdout, _ = run_cli(args + [str(tmp_path / "one")], capsys)
    assert code == 0 and stdout.startswith("a.png: tiger cat (282) ")
    assert (tmp_path / "one" / "a.gradcam.282.npz").is_file()
    labels = tmp_path / "mine.txt"
    labels.write_text("\n".join(f"mine{i}" for i in range(1000)) + "\n")
    args[args.index("tiger cat")] = "mine7"
    code, stdout, _ = run_cli(args + [str(tmp_path / "two"), "--labels", str(labels)], capsys)
    assert code == 0 and stdout.startswith("a.png: mine7 (7) ")


def test_overlay_shows_the_whole_image_with_a_colour_bar(world, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(base_args(world, out, world["images"] / "b.jpg"), capsys)[0] == 0
    (name,) = outputs_of(out, "b")
    with Image.open(out / f"{name}.png") as sheet:
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    # b.jpg is 48x40: the whole image enlarged 8x to 384x320, not a 32x32 centre crop
    with Image.open(world["images"] / "b.jpg") as original:
        whole = np.asarray(original.convert("RGB").resize((384, 320), Image.Resampling.NEAREST))
    top = pixels.shape[0] - 320
    assert top > 20  # room for the title and the subtitle
    np.testing.assert_array_equal(pixels[top:, :384], whole)
    bar = pixels[top:, 2 * 384 + 8 + 2]  # a column inside the colour bar, top to bottom
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_allclose(bar[0], np.array(jet(1.0)[:3]) * 255, atol=1)
    np.testing.assert_allclose(bar[-1], np.array(jet(0.0)[:3]) * 255, atol=1)
    assert "gradcam on layer3" in figure_subtitle("gradcam", "layer3")
    assert "min-max normalised" in figure_subtitle("gradcam", "layer3")


def test_explanation_figure_layout():
    image = torch.full((3, 40, 60), 128, dtype=torch.uint8)
    ramp = torch.linspace(-1, 3, 60).expand(40, 60)  # raw values from -1 to 3, left to right
    sheet = explanation_figure(image, ramp, "title", "subtitle", alpha=1.0, colormap="viridis")
    pixels = np.asarray(sheet).astype(int)
    top = sheet.height - 40
    overlay = pixels[top:, 64:124]
    viridis = matplotlib.colormaps["viridis"]
    np.testing.assert_allclose(overlay[20, 0], np.array(viridis(0.0)[:3]) * 255, atol=1)
    np.testing.assert_allclose(overlay[20, -1], np.array(viridis(1.0)[:3]) * 255, atol=1)
    assert (pixels[top:, :60] == 128).all()  # the picture itself, unchanged
    with pytest.raises(ValueError, match=r"map_ must be \(h, w\)"):
        explanation_figure(image, ramp[None], "t", "s")


def test_max_side_caps_the_whole_view(world, tmp_path, capsys, caplog):
    image = write_image(tmp_path / "wide.png", 400, 40, 7)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert run_cli(base_args(world, out, image) + ["--max-side", "100"], capsys)[0] == 0
    record = read_json(out / "explain.json")
    assert record["images"]["wide"]["input_size"] == [10, 100]
    (name,) = record["images"]["wide"]["outputs"]
    assert load_npz(out / f"{name}.npz")["maps"].shape == (1, 10, 100)
    assert any("400x40 pixels explained at 100x10 (--max-side 100)" in r.message
               for r in caplog.records)
    other = tmp_path / "default"
    assert run_cli(base_args(world, other, image), capsys)[0] == 0  # default 1024: 32x320
    assert read_json(other / "explain.json")["images"]["wide"]["input_size"] == [32, 320]


@pytest.mark.parametrize("view", ["crop", "squash"])
def test_crop_and_squash_views(world, tmp_path, capsys, view):
    out = tmp_path / view
    assert run_cli(base_args(world, out, world["images"] / "b.jpg") + ["--view", view],
                   capsys)[0] == 0
    record = read_json(out / "explain.json")
    assert record["images"]["b"]["input_size"] == [32, 32]
    (name,) = record["images"]["b"]["outputs"]
    assert load_npz(out / f"{name}.npz")["maps"].shape == (1, 32, 32)
    heading = explanation_figure(torch.zeros(3, 8, 384, dtype=torch.uint8), torch.zeros(8, 384),
                                 "t", "s").height - 8
    with Image.open(out / f"{name}.png") as sheet:  # crop: the 40x40 square the crop covers
        assert sheet.height - heading == (384 if view == "crop" else 320)  # squash: all 48x40


def test_a_run_that_wrote_nothing_binds_nothing(world, tmp_path, capsys):
    out = tmp_path / "out"
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (1, 1)).save(folder / "dot.png")  # refused by gradcam: nothing written
    args = base_args(world, out, folder)
    args[args.index("--resize") + 1] = args[args.index("--size") + 1] = "64"
    assert run_cli(args, capsys)[0] == 1
    assert read_json(out / "explain.json")["outputs"] == {}  # the skip is recorded, no more
    shutil.copy(world["images"] / "a.png", folder / "a.png")
    other = ["--view", "squash", "--method", "smoothgrad", "--option", "n_samples=2"]
    assert run_cli(args + other, capsys)[0] == 0  # other settings: the folder held nothing
    record = read_json(out / "explain.json")
    assert record["settings"]["preprocessing"]["view"] == "squash"
    assert sorted(e["image"] for e in record["outputs"].values()) == ["a", "dot"]  # no layer
    assert {e["method"] for e in record["outputs"].values()} == {"smoothgrad"}
    # a method with no outputs in the folder may come with its own settings
    code, _, _ = run_cli(args + ["--view", "squash", "--target-layer", "layer3"], capsys)
    assert code == 1  # dot.png is refused again, a.png is explained
    assert read_json(out / "explain.json")["methods"]["gradcam"]["target_layer"] == "layer3"


FIXED_SIZE = """\
def fixed(model):  # as torchvision's ViTs: torch._assert on the input size
    def hook(module, inputs):
        assert inputs[0].shape[-2:] == (32, 32), f"Wrong image size {tuple(inputs[0].shape)}"
    model.register_forward_pre_hook(hook)
"""


def test_fixed_size_models_are_told_to_use_squash(world, tmp_path, capsys):
    (tmp_path / "fixed.py").write_text(FIXED_SIZE)
    args = base_args(world, tmp_path / "out", world["images"] / "b.jpg") + [
        "--patch", f"{tmp_path / 'fixed.py'}:fixed"]
    assert_error(capsys, args, "--model resnet18 fails on a 32x38 input (Wrong image size",
                 "need --view squash or --view crop")
    assert run_cli(args + ["--view", "squash"], capsys)[0] == 0
