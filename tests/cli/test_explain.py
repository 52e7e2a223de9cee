"""``loupe explain`` and ``loupe methods`` end to end (in process), overlays, and the real-data
check on the shared MobileNetV2 ImageNet checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import loupe
from loupe.cli.methods import format_table, method_rows
from loupe.explaining.outputs import target_title
from loupe.explaining.targets import Target
from loupe.io import load_npz, read_json
from loupe.method_specs import parse_value
from loupe.models import random_model
from loupe.reports.overlay import blend, colormap_table, overlay_panels
from tests.cli.conftest import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NAMES,
    assert_error,
    base_args,
    raw_maps,
    run_cli,
)


def expected_outputs(world: dict[str, Path], name: str, k: int, method: str = "gradcam"):
    """Classes, softmax scores and maps computed without the CLI: torchvision's transforms for
    the input (the whole image, shorter side 32), the model's own top-k, and loupe.explain for
    the maps."""
    model = random_model("resnet18", num_classes=10)
    model.load_state_dict(torch.load(world["weights"], weights_only=True))
    transform = T.Compose([T.Resize(32, max_size=1024), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = transform(Image.open(world["images"] / name).convert("RGB"))[None]
    with torch.no_grad():
        logits = model(x)
    scores, classes = logits.softmax(1).topk(k, dim=1)
    # the layer the CLI finds on a 32x32 reference input (layer4 is 1x1 there), for every image
    maps = loupe.explain(model, x, classes, method=method, target_layer="layer3")
    return classes[0], scores[0], maps[0]


# -- the happy path --------------------------------------------------------------------------

def test_explain_writes_maps_and_overlays(world, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(base_args(world, out) + ["--topk", "2"], capsys)
    assert code == 0
    record = read_json(out / "explain.json")
    expected_files = {"explain.json"}
    for name in ("a.png", "b.jpg", "c.png"):
        stem = Path(name).stem
        classes, scores, maps = expected_outputs(world, name, k=2)
        line = next(line for line in stdout.splitlines() if line.startswith(name))
        assert record["images"][stem]["outputs"] == [f"{stem}.gradcam.{c}" for c in
                                                     classes.tolist()]
        for k, (c, s) in enumerate(zip(classes.tolist(), scores.tolist(), strict=True)):
            assert f"{NAMES[c + 1]} ({c}) {s:.3f}" in line  # offset 1: line c+1 is class c
            output = f"{stem}.gradcam.{c}"
            expected_files |= {output + ".npz", output + ".png"}
            data = load_npz(out / f"{output}.npz")
            assert sorted(data) == ["classes", "maps", "peak", "scores"]
            assert np.abs(data["maps"]).max() == 1  # divided by the peak
            assert data["maps"].shape == (1, *maps.shape[-2:]) and data["maps"].dtype == np.float16
            assert data["classes"].tolist() == [c] and data["classes"].dtype == np.int64
            np.testing.assert_allclose(data["scores"], [s], rtol=1e-5)
            np.testing.assert_allclose(raw_maps(data)[0], maps[k].numpy(),
                                       rtol=2e-3, atol=1e-3 * float(maps[k].abs().max()))
            entry = record["outputs"][output]
            assert (entry["class"], entry["name"], entry["method"]) == (c, NAMES[c + 1], "gradcam")
            assert entry["score"] == pytest.approx(s, rel=1e-5)
            assert entry["target_layer"] == "layer3"  # layer4 is 1x1 at 32 pixels
    assert sorted(p.name for p in out.iterdir()) == sorted(expected_files)
    assert record["images"]["b"]["size"] == [40, 48] and record["images"]["b"]["input_size"] == [
        32, 38]  # the whole image, shorter side 32 (torchvision's Resize(32))


def test_batch_size_does_not_change_the_maps(world, tmp_path, capsys):
    one, three = tmp_path / "one", tmp_path / "three"
    assert run_cli(base_args(world, one) + ["--batch-size", "1"], capsys)[0] == 0
    assert run_cli(base_args(world, three) + ["--batch-size", "3"], capsys)[0] == 0
    for stem in "abc":
        (name,) = read_json(one / "explain.json")["images"][stem]["outputs"]
        a, b = load_npz(one / f"{name}.npz"), load_npz(three / f"{name}.npz")
        assert a["classes"].tolist() == b["classes"].tolist()
        np.testing.assert_allclose(raw_maps(a), raw_maps(b), rtol=2e-3,
                                   atol=2e-3 * float(np.abs(raw_maps(a)).max()))


def test_targets_by_index_and_name_and_method_options(world, tmp_path, capsys):
    out = tmp_path / "out"
    args = base_args(world, out, world["images"] / "a.png") + [
        "--target", "3", "eel", "--method", "smoothgrad", "--option", "n_samples=2", "seed=4",
    ]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0
    data = [load_npz(out / f"a.smoothgrad.{c}.npz") for c in (3, 4)]  # 'eel' is line 5: 4
    assert [d["classes"].tolist() for d in data] == [[3], [4]]
    assert stdout.startswith("a.png: dog (3)")
    model = random_model("resnet18", num_classes=10)
    model.load_state_dict(torch.load(world["weights"], weights_only=True))
    transform = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = transform(Image.open(world["images"] / "a.png").convert("RGB"))[None]
    maps = loupe.explain(model, x, [[3, 4]], method="smoothgrad", n_samples=2, seed=4)[0]
    got = np.concatenate([raw_maps(d) for d in data])
    np.testing.assert_allclose(got, maps.numpy(), rtol=2e-3, atol=1e-3 * float(maps.abs().max()))


def test_patch_is_applied_after_loading(world, tmp_path, capsys):
    patch = tmp_path / "favour.py"
    patch.write_text(
        "import torch\n"
        "def favour_seven(model):\n"
        "    with torch.no_grad():\n"
        "        model.fc.bias[7] += 1000.0\n"
    )
    out = tmp_path / "out"
    args = base_args(world, out) + ["--patch", f"{patch}:favour_seven", "--method", "saliency"]
    assert run_cli(args, capsys)[0] == 0
    for stem in "abc":
        data = load_npz(out / f"{stem}.saliency.7.npz")
        assert data["classes"].tolist() == [7] and data["scores"][0] == pytest.approx(1.0)


def test_folder_members_that_are_not_images_are_skipped(world, tmp_path, capsys, caplog):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(world["images"] / "a.png", folder / "a.png")
    (folder / "LICENSE.cat.png").write_text("MIT licence, not a picture")
    (folder / "notes.txt").write_text("not an image suffix at all")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code, _, _ = run_cli(base_args(world, out, folder), capsys)
    assert code == 0  # a file that is no image at all is not a failure
    (name,) = read_json(out / "explain.json")["images"]["a"]["outputs"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["explain.json", f"{name}.npz", f"{name}.png"])
    assert any("skipping" in r.message and "LICENSE.cat.png" in r.message for r in caplog.records)


# -- errors: one line naming the file and the problem, exit status 2 -------------------------

def test_error_unreadable_named_image(world, tmp_path, capsys):
    fake = tmp_path / "fake.jpg"
    fake.write_text("hello")
    assert_error(capsys, base_args(world, tmp_path / "out", fake), str(fake), "cannot read image")
    assert not (tmp_path / "out").exists()


def test_error_missing_input(world, tmp_path, capsys):
    missing = tmp_path / "nope.png"
    assert_error(capsys, base_args(world, tmp_path / "o", missing), str(missing), "no such image")


def test_error_missing_weights_file(world, tmp_path, capsys):
    args = base_args(world, tmp_path / "out")
    args[args.index("--weights") + 1] = str(tmp_path / "gone.pth")
    assert_error(capsys, args, "weights file", "gone.pth", "does not exist")


def test_error_wrong_state_dict_for_the_model(world, tmp_path, capsys):
    args = base_args(world, tmp_path / "out")
    args[args.index("--model") + 1] = "mobilenet_v2"
    assert_error(capsys, args, str(world["weights"]), "not a state dict for mobilenet_v2")


def test_error_unknown_model(world, tmp_path, capsys):
    args = base_args(world, tmp_path / "out")
    args[args.index("--model") + 1] = "resnet5"
    assert_error(capsys, args, "unknown model 'resnet5'", "resnet50")


def test_error_no_images_in_folder(world, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    (empty / "LICENSE.png").write_text("not a picture either")
    assert_error(capsys, base_args(world, tmp_path / "out", empty), f"no images found in {empty}")


def test_error_labels_do_not_fit_the_model(world, tmp_path, capsys):
    args = base_args(world, tmp_path / "out")
    args[args.index("--label-offset") + 1] = "0"
    assert_error(capsys, args, str(world["labels"]), "11 class names for a model with 10 outputs",
                 "--label-offset 1")
    args[args.index("--labels") + 1] = str(tmp_path / "none.txt")
    assert_error(capsys, args, "labels file", "none.txt", "does not exist")


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--option", "n_shuffles=8"], ["method 'gradcam' has no option 'n_shuffles'"]),
        (["--option", "n_samples"], ["--option 'n_samples' must be KEY=VALUE"]),
        (["--target", "99"], ["--target 99 is out of range (0..9)"]),
        (["--target", "zebra"], ["--target 'zebra' is not a class name"]),
        (["--target", "1", "--topk", "2"], ["--target or --topk, not both"]),
        (["--topk", "11"], ["--topk 11 exceeds the model's 10 classes"]),
        (["--scale", "x*x"], ["--scale 'x*x' is not an affine expression"]),
        (["--target-layer", "layer9"], ["layer 'layer9' does not exist", "layer4"]),
        (["--colormap", "nosuchmap"], ["unknown colormap 'nosuchmap'"]),
        (["--patch", "fix.py"], ["must be PY_FILE:FUNCTION"]),
    ],
)
def test_error_bad_arguments(world, tmp_path, capsys, extra, fragments):
    assert_error(capsys, base_args(world, tmp_path / "out") + extra, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_error_two_inputs_with_the_same_name(world, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(world["images"] / "a.png", other / "a.png")
    assert_error(capsys, base_args(world, tmp_path / "o", world["images"], other),
                 "would write the same outputs")


def test_parse_value():
    assert parse_value("8") == 8 and isinstance(parse_value("8"), int)
    assert parse_value("0.5") == 0.5 and parse_value("1e-3") == 0.001
    assert parse_value("True") is True and parse_value("false") is False
    assert parse_value("none") is None
    assert parse_value("2,3,4") == (2, 3, 4) and parse_value("cyclic") == "cyclic"


def test_titles():
    names = ["x"] * 88 + ["macaw, Ara macao"]
    assert target_title(Target(88, 0.99712), names) == "macaw (88) 0.997"
    assert target_title(Target(3, 0.5), None) == "class 3 0.500"
    assert target_title(Target(88, 0.871, box_index=1), names) == "macaw (88) box 1 0.871"


# -- loupe methods ---------------------------------------------------------------------------

def test_methods_lists_the_registry(capsys):
    code, stdout, _ = run_cli(["methods"], capsys)
    assert code == 0
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["name", "kind", "stochastic"]
    assert len(lines) == 2 + len(loupe.list_methods())
    for name, line in zip(loupe.list_methods(), lines[2:], strict=True):
        spec = loupe.get_method(name)
        assert line.split()[0] == name
        assert line.split()[1] == ("layer" if spec.uses_layer else "input")
        assert line.endswith(spec.paper)


def test_methods_markdown_table():
    text = format_table([("a", "layer", "no", "P1"), ("bb", "input", "yes", "P2")], markdown=True)
    assert text.splitlines() == [
        "| name | kind  | stochastic | paper |",
        "|------|-------|------------|-------|",
        "| a    | layer | no         | P1    |",
        "| bb   | input | yes        | P2    |",
    ]
    assert [row[0] for row in method_rows()] == loupe.list_methods()


# -- overlays --------------------------------------------------------------------------------

def test_colormap_table_is_matplotlibs():
    table = colormap_table("viridis")
    lut = matplotlib.colormaps["viridis"](np.arange(256))[:, :3]
    np.testing.assert_allclose(table.numpy(), lut, atol=1e-6)


def test_blend_matches_a_numpy_reference():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 8, 6), dtype=torch.uint8, generator=g)
    maps = torch.randn(2, 8, 6, generator=g)
    got = blend(image, maps, alpha=0.3, colormap="jet")
    lut = matplotlib.colormaps["jet"](np.arange(256))[:, :3]
    for k in range(2):
        m = maps[k].numpy()
        level = np.round((m - m.min()) / (m.max() - m.min()) * 255).astype(int)
        expected = 0.7 * image.numpy().transpose(1, 2, 0) + 0.3 * 255 * lut[level]
        np.testing.assert_allclose(got[k].permute(1, 2, 0).numpy(), np.round(expected), atol=1)
    assert torch.equal(blend(image, maps, alpha=0.0)[1], image)


def test_blend_resizes_small_maps_and_checks_shapes():
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    left = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # hot on the left half
    out = blend(image, left, alpha=1.0, colormap="gray")
    assert out.shape == (1, 3, 16, 16)
    assert out[0, :, :, 0].min() == 255 and out[0, :, :, -1].max() == 0
    with pytest.raises(ValueError, match="image must be"):
        blend(torch.zeros(16, 16, dtype=torch.uint8), left)
    with pytest.raises(ValueError, match="alpha must be"):
        blend(image, left, alpha=2)


def test_overlay_panels_layout():
    image = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    maps = torch.rand(2, 5, 5)
    sheet = overlay_panels(image, maps, ["first", "second"], min_panel=60)
    assert sheet.width == 3 * 60 and sheet.height > 40  # factor 2: panels 60 x 40 under titles
    pixels = np.asarray(sheet)
    strip = sheet.height - 40
    assert (pixels[strip:, :60] == 200).all()  # the input panel is the image, enlarged
    assert (pixels[:strip, :3] == 255).all()  # the title strip is white at its edge
    assert not (pixels[strip:, 60:] == 200).all()  # the overlay panels are coloured
    with pytest.raises(ValueError, match="1 titles for 2 maps"):
        overlay_panels(image, maps, ["only one"])


# -- real data -------------------------------------------------------------------------------

def test_real_mobilenet_v2_on_photos(assets, tmp_path, capsys):
    """The shared TF-slim MobileNetV2 (ImageNet) through the CLI with its own preprocessing
    (x*2-1), the TF 'SAME' padding patch and the 1001-line labels file."""
    weights = assets / "weights"
    photos = assets / "photos"
    for needed in (weights / "mobilenet_v2_imagenet1k_coral.pth", photos / "cat_720p.jpg",
                   photos / "parrot.jpg"):
        if not needed.exists():
            pytest.skip(f"{needed} is missing from the assets")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli([
        "explain", str(photos / "cat_720p.jpg"), str(photos / "parrot.jpg"),
        "--model", "mobilenet_v2", "--weights", str(weights / "mobilenet_v2_imagenet1k_coral.pth"),
        "--scale", "x*2-1", "--patch", f"{weights / 'tf_same_padding.py'}:tf_same_padding",
        # --labels-offset: the option's old name, hidden but still accepted
        "--labels", str(weights / "imagenet_labels_1001.txt"), "--labels-offset", "1",
        "--topk", "3", "--method", "gradcam", "--device", "cpu", "--out", str(out),
    ], capsys)
    assert code == 0, stderr
    record = read_json(out / "explain.json")
    cat, parrot = ([load_npz(out / f"{name}.npz") for name in record["images"][stem]["outputs"]]
                   for stem in ("cat_720p", "parrot"))
    assert 281 <= cat[0]["classes"][0] <= 285, cat[0]["classes"]
    assert parrot[0]["classes"][0] == 88, parrot[0]["classes"]
    assert "parrot.jpg: macaw (88)" in stdout
    for data, size in ((cat, (256, 455)), (parrot, (464, 256))):  # whole photos, short side 256
        scores = np.concatenate([d["scores"] for d in data])
        assert len(data) == 3 and (np.diff(scores) <= 0).all() and 0 < scores.sum() <= 1 + 1e-6
        for d in data:
            assert d["maps"].shape == (1, *size) and d["maps"].dtype == np.float16
            assert np.isfinite(d["maps"]).all() and d["maps"].max() > 0
    with Image.open(out / f"{record['images']['cat_720p']['outputs'][0]}.png") as sheet:
        assert sheet.width > 2 * 768 and 432 < sheet.height < 768  # two 768x432 panels + bar
