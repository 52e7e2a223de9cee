"""``loupe faithfulness`` end to end with a tiny seeded classifier: the per-image values are
those of ``faithfulness_table`` on the same images, targets and regions built independently,
the intervals are paired bootstraps of them, the files and the table, re-runs (reuse, an added
method, other settings refused), image files, images without a target, and the errors."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from loupe.cli import main
from loupe.data.spec import DatasetSpec, open_spec
from loupe.faithfulness import faithfulness_markdown
from loupe.metrics.bootstrap import bootstrap_mean_ci
from loupe.metrics.faithfulness import faithfulness_table, list_metrics
from loupe.models import load_classifier
from loupe.models.runs import load_model, save_model

SYNTHETIC = ["--dataset", "synthetic", "--synthetic-train", "6", "--synthetic-size", "32"]
FAST = ["--steps", "4", "--metric-option", "road.fractions=(0.3,0.7)", "--bootstrap", "200",
        "--device", "cpu", "--no-progress"]
METRIC_OPTIONS = {"deletion": {"steps": 4}, "insertion": {"steps": 4},
                  "road": {"fractions": (0.3, 0.7)}}


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def sharp_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with its last layer scaled by 3000: logits of order 1 instead of 1e-3, so
    softmax probabilities differ between classes and move when the input is perturbed."""
    model, spec = load_model(tiny_run)
    with torch.no_grad():
        model.fc.weight.mul_(3000)
    folder = tmp_path_factory.mktemp("sharp-run")
    save_model(folder, model, spec)
    return folder


@pytest.fixture(scope="module")
def scored(sharp_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("faithfulness") / "out"
    argv = ["faithfulness", *SYNTHETIC, "--model", str(sharp_run), "--methods", "gradcam",
            "saliency", *FAST, "--batch-size", "4", "--out", str(out)]
    code, stdout = run_cli(argv)
    assert code == 0
    return {"out": out, "argv": argv, "stdout": stdout,
            "results": json.loads((out / "results.json").read_text())}


def synthetic_inputs(run: Path) -> tuple:
    """Images, targets and mask regions of the six synthetic images, built here from the
    data set: resized to the run's input size 32 (they are 32 already), normalised by the
    run's mean/std, targets = labels - 1 (the run's label offset), regions = class pixels."""
    dataset = open_spec(DatasetSpec("synthetic", synthetic_train=6, synthetic_size=32))
    classifier = load_classifier(str(run))
    images, targets, regions = [], [], []
    for sample in dataset:
        pixels = torch.from_numpy(np.array(sample.image)).permute(2, 0, 1)
        images.append((pixels.float() / 255 - 0.5) / 0.25)
        classes = sample.labels.nonzero().flatten()
        targets.append((classes - 1).tolist())
        regions.append(torch.stack([sample.mask == c for c in classes]))
    width = max(len(t) for t in targets)
    padded = torch.tensor([t + [-1] * (width - len(t)) for t in targets])
    region = torch.zeros(len(images), width, 32, 32, dtype=torch.bool)
    for i, r in enumerate(regions):
        region[i, : len(r)] = r
    return classifier.model, torch.stack(images), padded, region, list(dataset.ids)


def test_values_are_faithfulness_table_on_the_same_images_targets_and_regions(scored, sharp_run):
    model, images, targets, regions, ids = synthetic_inputs(sharp_run)
    expected = faithfulness_table(model, images, targets, methods=["gradcam", "saliency"],
                                  regions=regions, metric_options=METRIC_OPTIONS,
                                  n_boot=1)
    results = scored["results"]
    assert results["ids"] == ids and results["images"] == 6
    assert results["metrics"] == list_metrics() and results["methods"] == ["gradcam",
                                                                           "saliency"]
    for method in ("gradcam", "saliency"):
        for metric in list_metrics():
            got = torch.tensor([float("nan") if v is None else v
                                for v in results["per_image"][method][metric]],
                               dtype=torch.float64)
            torch.testing.assert_close(got, expected.per_image[method, metric], rtol=1e-5,
                                       atol=1e-6, equal_nan=True)
    # the scores move: the check compares real numbers, not a constant
    assert results["per_image"]["gradcam"]["deletion"] != \
        results["per_image"]["saliency"]["deletion"]
    assert results["targets"][0] == [f"class{c + 1} ({c})" for c in targets[0].tolist()
                                      if c >= 0]


def test_intervals_are_paired_bootstraps_of_the_per_image_values(scored):
    results = scored["results"]
    assert results["bootstrap"] == {"n": 200, "seed": 0, "level": 0.95}
    assert len(results["table"]) == 2 * len(list_metrics())
    for cell in results["table"]:
        values = torch.tensor(results["per_image"][cell["method"]][cell["metric"]],
                              dtype=torch.float64)
        interval = bootstrap_mean_ci(values, 200, 0, 0.95)
        assert cell["images"] == 6
        assert cell["mean"] == pytest.approx(interval.observed, abs=1e-12)
        assert (cell["low"], cell["high"]) == pytest.approx((interval.low, interval.high))
        assert cell["low"] <= cell["mean"] <= cell["high"]


def test_the_files_and_the_printed_table(scored):
    out, results = scored["out"], scored["results"]
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "faithfulness.json", "faithfulness.md", "gradcam.json", "results.json", "saliency.json"]
    table = (out / "faithfulness.md").read_text()
    assert table == faithfulness_markdown(results) and scored["stdout"].startswith(table)
    assert "scored 6 images with 2 methods" in scored["stdout"]
    header, rule, *rows = [line for line in table.splitlines() if line.startswith("|")]
    assert header.split(" | ")[1:3] == ["deletion ↓", "insertion ↑"]
    assert len(rows) == 2 and rows[0].startswith("| gradcam | ")
    cells = {c["metric"]: c for c in results["table"] if c["method"] == "gradcam"}
    first = rows[0].split(" | ")[1]
    deletion = cells["deletion"]
    assert f"{deletion['mean']:.3f}" in first and f"{deletion['low']:.3f}" in first
    for metric in list_metrics():  # the best mean of every column is bold
        column = 1 + list_metrics().index(metric)
        assert any("**" in row.split(" | ")[column] for row in rows)
    settings = json.loads((out / "faithfulness.json").read_text())
    assert settings["regions"] == "masks" and settings["size"] == 32
    assert settings["metric_options"]["deletion"] == {"steps": 4}
    assert results["settings"] == settings


def test_a_rerun_reuses_the_method_files_and_adds_a_method(scored, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(scored["out"], out)
    gradcam = (out / "methods" / "gradcam.json").read_bytes()
    # poison the kept file: if it were recomputed, the value would come back
    record = json.loads(gradcam)
    record["values"]["deletion"][0] = 123.0
    (out / "methods" / "gradcam.json").write_text(json.dumps(record))
    argv = [a if a != str(scored["out"]) else str(out) for a in scored["argv"]]
    code, _ = run_cli([*argv[:argv.index("--methods") + 3], "cam", *argv[argv.index(
        "--methods") + 3:]])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["methods"] == ["gradcam", "saliency", "cam"]
    assert results["per_image"]["gradcam"]["deletion"][0] == 123.0
    assert (out / "methods" / "cam.json").is_file()
    assert results["per_image"]["saliency"] == scored["results"]["per_image"]["saliency"]


def test_other_settings_are_refused(scored, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(scored["out"], out)
    argv = [a if a != str(scored["out"]) else str(out) for a in scored["argv"]]
    argv[argv.index("--steps") + 1] = "5"
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "faithfulness.json" in error and "other settings" in error and "metric_options" in error


def test_no_reference_row_no_differences(scored):
    assert scored["results"]["reference"] is None and scored["results"]["differences"] == []
    assert "## Against" not in (scored["out"] / "faithfulness.md").read_text()


@pytest.mark.parametrize("reference", [None, "saliency"])
def test_differences_to_the_reference_are_paired_bootstraps(scored, tmp_path, reference):
    # the centre-bias baseline added to the run is the reference unless --reference names one
    out = tmp_path / "out"
    shutil.copytree(scored["out"], out)
    argv = [a if a != str(scored["out"]) else str(out) for a in scored["argv"]]
    at = argv.index("--methods") + 3
    argv = [*argv[:at], "baseline-gaussian", *argv[at:]]
    code, stdout = run_cli(argv + (["--reference", reference] if reference else []))
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    expected = reference or "baseline-gaussian"
    assert results["reference"] == expected
    others = [m for m in ("gradcam", "saliency", "baseline-gaussian") if m != expected]
    assert [c["method"] for c in results["differences"]] == [
        m for m in others for _ in list_metrics()]
    per_image = results["per_image"]
    for cell in results["differences"]:
        values = (torch.tensor(per_image[cell["method"]][cell["metric"]], dtype=torch.float64)
                  - torch.tensor(per_image[expected][cell["metric"]], dtype=torch.float64))
        interval = bootstrap_mean_ci(values, 200, 0, 0.95)
        assert cell["images"] == 6
        assert cell["mean"] == pytest.approx(interval.observed, abs=1e-12)
        assert (cell["low"], cell["high"]) == pytest.approx((interval.low, interval.high))
    table = (out / "faithfulness.md").read_text()
    assert stdout.startswith(table) and f"## Against {expected}" in table
    section = table.split(f"## Against {expected}")[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == others


def test_differences_are_marked_where_the_interval_excludes_zero():
    # a hand-made results.json: deletion (lower is better) and insertion (higher is better)
    def cell(method, metric, mean, low, high, images=4):
        return {"method": method, "metric": metric, "mean": mean, "low": low, "high": high,
                "images": images}

    results = {
        "settings": {"images": {"files": []}, "size": 32, "targets": {"rule": "top-1"},
                     "model": {"model": "m", "weights": None}, "score": "probability"},
        "bootstrap": {"n": 10, "seed": 0, "level": 0.95}, "images": 4,
        "methods": ["a", "b", "c", "ref"], "metrics": ["deletion", "insertion"],
        "higher_is_better": {"deletion": False, "insertion": True},
        "table": [cell(m, k, 0.5, 0.4, 0.6) for m in ("a", "b", "c", "ref")
                  for k in ("deletion", "insertion")],
        "seconds": {"a": 1.0, "b": 1.0, "c": 1.0, "ref": 1.0}, "reference": "ref",
        "differences": [cell("a", "deletion", -0.2, -0.3, -0.1),
                        cell("a", "insertion", 0.2, 0.1, 0.3),
                        cell("b", "deletion", 0.2, 0.1, 0.3),
                        cell("b", "insertion", -0.0001, -0.1, 0.1, images=3),
                        cell("c", "deletion", 0.0, 0.0, 0.0),
                        cell("c", "insertion", 0.01, 0.0001, 0.02)],
    }
    section = faithfulness_markdown(results).split("## Against ref")[1]
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert rows["a"] == ["**-0.200 [-0.300, -0.100]**", "**+0.200 [+0.100, +0.300]** |"]
    assert rows["b"] == ["*+0.200 [+0.100, +0.300]*", "-0.000 [-0.100, +0.100] (n=3) |"]
    # a bound that rounds to zero keeps its sign: +0.000 excludes 0, so the cell is marked
    assert rows["c"] == ["0.000 [0.000, 0.000]", "**+0.010 [+0.000, +0.020]** |"]
    assert "ref" not in rows


def test_boxes_as_regions(sharp_run, tmp_path):
    out = tmp_path / "boxes"
    argv = ["faithfulness", *SYNTHETIC, "--model", str(sharp_run), "--methods", "cam",
            "--metrics", "pointing_game", "energy_pointing_game", "--regions", "boxes",
            *FAST, "--out", str(out)]
    assert run_cli(argv)[0] == 0
    results = json.loads((out / "results.json").read_text())
    model, images, targets, _, _ = synthetic_inputs(sharp_run)
    dataset = open_spec(DatasetSpec("synthetic", synthetic_train=6, synthetic_size=32))
    regions = torch.zeros(6, targets.shape[1], 32, 32, dtype=torch.bool)
    for i, sample in enumerate(dataset):
        for k, c in enumerate(sample.labels.nonzero().flatten().tolist()):
            for (x0, y0, x1, y1), label in zip(sample.boxes.tolist(), sample.box_labels.tolist(),
                                               strict=True):
                if label == c:  # edge coordinates: pixels x0 .. x1 - 1
                    regions[i, k, int(y0):math.ceil(y1), int(x0):math.ceil(x1)] = True
    expected = faithfulness_table(model, images, targets, methods=["cam"], regions=regions,
                                  metrics=["pointing_game", "energy_pointing_game"],
                                  n_boot=1)
    for metric in ("pointing_game", "energy_pointing_game"):
        torch.testing.assert_close(torch.tensor(results["per_image"]["cam"][metric],
                                                dtype=torch.float64),
                                   expected.per_image["cam", metric], rtol=1e-5, atol=1e-6)
    assert json.loads((out / "faithfulness.json").read_text())["regions"] == "boxes"


def test_images_without_a_counterpart_are_left_out(sharp_run, folder_root, tmp_path):
    # --label-offset 4: data-set class c is output c - 4, so classes 1-3 have no counterpart
    # and image e (class 3 alone) has no target
    out = tmp_path / "offset"
    argv = ["faithfulness", "--dataset", "folder", "--root", str(folder_root), "--model",
            str(sharp_run), "--label-offset", "4", "--methods", "cam", "--metrics",
            "average_drop", "pointing_game", "--size", "24", *FAST, "--out", str(out)]
    assert run_cli(argv)[0] == 0
    results = json.loads((out / "results.json").read_text())
    dataset = open_spec(DatasetSpec("folder", root=str(folder_root)))
    kept = [s.id for s in dataset if (s.labels[4:] > 0).any()]
    assert results["ids"] == kept == ["a", "b", "c", "d"]
    for sample_id, names in zip(results["ids"], results["targets"], strict=True):
        labels = dataset[dataset.ids.index(sample_id)].labels
        assert names == [f"class{c} ({c - 4})" for c in labels.nonzero().flatten().tolist()
                         if c >= 4]
    assert json.loads((out / "faithfulness.json").read_text())["size"] == 24


def write_photos(folder: Path) -> Path:
    folder.mkdir()
    generator = torch.Generator().manual_seed(3)
    for name, (w, h) in {"a.png": (40, 30), "b.jpg": (32, 32), "c.png": (20, 50)}.items():
        pixels = torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / name)
    (folder / "LICENSE.png").write_text("not an image")
    return folder


def test_image_files_are_explained_for_their_top_class(sharp_run, tmp_path):
    photos = write_photos(tmp_path / "photos")
    out = tmp_path / "out"
    argv = ["faithfulness", "--images", str(photos), "--model", str(sharp_run), "--methods",
            "gradcam", "--metrics", "insertion", "--size", "32", *FAST, "--out", str(out)]
    assert run_cli(argv)[0] == 0
    results = json.loads((out / "results.json").read_text())
    assert results["ids"] == ["a.png", "b.jpg", "c.png"]
    classifier = load_classifier(str(sharp_run))
    images = []
    for name in results["ids"]:
        pixels = torch.from_numpy(np.array(Image.open(photos / name).convert("RGB")))
        pixels = pixels.permute(2, 0, 1).float()[None] / 255
        pixels = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False,
                               antialias=True)
        images.append((pixels[0] - 0.5) / 0.25)
    x = torch.stack(images)
    with torch.no_grad():
        top = classifier.model(x).argmax(1)
    assert results["targets"] == [[f"class{c + 1} ({c})"] for c in top.tolist()]
    expected = faithfulness_table(classifier.model, x, None, methods=["gradcam"],
                                  metrics=["insertion"], metric_options=METRIC_OPTIONS,
                                  n_boot=1)
    torch.testing.assert_close(torch.tensor(results["per_image"]["gradcam"]["insertion"],
                                            dtype=torch.float64),
                               expected.per_image["gradcam", "insertion"], rtol=1e-5, atol=1e-6)
    settings = json.loads((out / "faithfulness.json").read_text())
    assert settings["regions"] == "none" and settings["targets"]["rule"] == "top-1"
    assert settings["images"]["count"] == 3


@pytest.mark.parametrize("extra, message", [
    ([], "give --dataset KIND"),
    (["--images", "IMAGES", *SYNTHETIC], "not both"),
    (["--images", "IMAGES", "--metrics", "pointing_game"], "needs object regions"),
    (["--images", "IMAGES", "--regions", "masks"], "image files have no regions"),
    (["--images", "IMAGES", "--class-map", "coco_to_imagenet"], "image files have none"),
    (["--images", "IMAGES", "--metric-option", "deletion.step=3"],
     "deletion has no option 'step'; its options are: baseline, blur_sigma, seed, steps"),
    (["--images", "IMAGES", "--metric-option", "curves.steps=3"], "no metric group 'curves'"),
    (["--images", "IMAGES", "--metric-option", "steps=3"], "must be GROUP.KEY=VALUE"),
    (["--images", "IMAGES", "--metric-option", "deletion.steps=3", "--steps", "4"],
     "--steps and --metric-option deletion.steps"),
    (["--images", "IMAGES", "--methods", "gradcam:smooth=1"], "has no option 'smooth'"),
    (["--images", "IMAGES", "--methods", "gradcam", "gradcam"], "give each method once"),
    (["--images", "IMAGES", "--reference", "gradcam"],
     "--reference 'gradcam' is not one of --methods (cam); give one of them"),
    (["--images", "IMAGES", "--reference", "cam:smooth=1"], "--reference: "),
    (["--images", "MISSING"], "--images MISSING: no such image file or folder"),
    (["--images", "IMAGES", "--seed", "3"], "--seed only applies to --weights random"),
    # parse-time checks (every numeric option: tests/cli/test_values.py)
    (["--images", "IMAGES", "--steps", "0"], "argument --steps: expected an integer >= 1"),
    (["--dataset", "folder", "--root", "FOLDER", "--regions", "boxes"],
     "--regions boxes: the data set has no boxes"),
])
def test_errors_are_one_line(extra, message, sharp_run, folder_root, tmp_path, capsys):
    photos = write_photos(tmp_path / "photos")
    replace = {"IMAGES": str(photos), "MISSING": str(tmp_path / "missing"),
               "FOLDER": str(folder_root)}
    extra = [replace.get(a, a) for a in extra]
    methods = [] if "--methods" in extra else ["--methods", "cam"]
    argv = ["faithfulness", "--model", str(sharp_run), *methods, *extra, "--out",
            str(tmp_path / "out"), "--no-progress", "--device", "cpu"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("loupe faithfulness: error: ") and "\n" not in error
    assert message.replace("MISSING", str(tmp_path / "missing")) in error


def test_the_parser_names_equal_the_library():
    # the parser copies them so that loupe --help imports no torch
    from loupe.cli import faithfulness as cli
    from loupe.faithfulness import config

    assert cli.METRIC_NAMES == tuple(list_metrics())
    assert cli.METRIC_GROUPS == tuple(config.GROUP_FUNCTIONS)
    assert (cli.REGION_SOURCES, cli.SCORES) == (config.REGION_SOURCES, config.SCORES)
    assert config.DEFAULT_REFERENCE in " ".join(cli.DESCRIPTION.split())


def test_refused_under_torchrun(sharp_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["faithfulness", *SYNTHETIC, "--model", str(sharp_run), "--methods", "cam",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_real_photos_with_the_imagenet_mobilenet(assets: Path, tmp_path: Path):
    """The shared MobileNetV2 (TF preprocessing, tf_same_padding) on three real photos: the
    top-1 targets are the photos' objects, and Grad-CAM's insertion curve rises faster than
    that of an uninformative map (baseline-background: a constant map, pixels in a seeded
    random order) on each photo."""
    weights = assets / "weights"
    names = ["parrot.jpg", "cat_and_dog.png", "hot_dog.jpg"]
    out = tmp_path / "photos"
    argv = ["faithfulness", "--images", *(str(assets / "photos" / n) for n in names),
            "--model", "mobilenet_v2", "--weights",
            str(weights / "mobilenet_v2_imagenet1k_coral.pth"), "--scale", "x*2-1", "--patch",
            f"{weights / 'tf_same_padding.py'}:tf_same_padding", "--methods", "gradcam",
            "baseline-background", "--metrics", "insertion", "--steps", "8", "--bootstrap",
            "100", "--device", "cpu", "--no-progress", "--out", str(out)]
    assert run_cli(argv)[0] == 0
    results = json.loads((out / "results.json").read_text())
    assert results["ids"] == names
    # macaw, bull mastiff, hot dog ("88", or "macaw (88)" where the classifier has names)
    assert [[int(t.split("(")[-1].rstrip(")")) for t in row] for row in results["targets"]] == [
        [88], [243], [934]]
    gradcam = results["per_image"]["gradcam"]["insertion"]
    uninformative = results["per_image"]["baseline-background"]["insertion"]
    assert all(g > u + 0.1 for g, u in zip(gradcam, uninformative, strict=True)), (
        gradcam, uninformative)
