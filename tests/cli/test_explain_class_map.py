"""``loupe explain --class-map`` (issue 13: the flag of ``maps`` and ``compare``, with one meaning
everywhere): ``--target NAME`` may name a data-set class, which is explained through its
best-scoring classifier class in each image; ``--topk`` ranks data-set classes; the files and
the record name the data-set class. Class choices are checked against the logits computed
here, maps against ``loupe.explain`` for the chosen class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

import loupe
from loupe.io import load_npz, read_json
from loupe.models import random_model
from tests.cli.conftest import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NAMES,
    assert_error,
    base_args,
    raw_maps,
    run_cli,
)

# data-set classes over the 10 classifier classes (ant bee cat dog eel fox gnu hen ibis jay)
TABLE = {"insect": [0, 1], "pet": [2, 3, 5], "bird": [7, 8, 9], "traffic light": [4],
         "person": []}


def model_and_input(world: dict[str, Path], name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The world's model and the input the CLI gives it (whole image, shorter side 32), made
    with torchvision's transforms."""
    model = random_model("resnet18", num_classes=10)
    model.load_state_dict(torch.load(world["weights"], weights_only=True))
    transform = T.Compose([T.Resize(32, max_size=1024), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return model, transform(Image.open(world["images"] / name).convert("RGB"))[None]


def write_table(folder: Path, table: dict[str, list[int]] = TABLE) -> Path:
    path = folder / "map.json"
    path.write_text(json.dumps(table))
    return path


def test_target_names_a_data_set_class(world, tmp_path, capsys):
    out, table = tmp_path / "out", write_table(tmp_path)
    args = base_args(world, out) + ["--class-map", str(table), "--target", "Insect", "pet", "6"]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    record = read_json(out / "explain.json")
    assert record["settings"]["class_map"]["source"] == str(table)
    chosen = set()
    for image in ("a.png", "b.jpg", "c.png"):
        stem = Path(image).stem
        model, x = model_and_input(world, image)
        with torch.no_grad():
            logits = model(x)[0]
        probabilities = logits.softmax(0)
        # the best-scoring member of each set, and the plain class 6 beside them
        insect = max(TABLE["insect"], key=lambda c: float(logits[c]))
        pet = max(TABLE["pet"], key=lambda c: float(logits[c]))
        chosen |= {insect, pet}
        assert outputs_of(record, stem) == [f"{stem}.gradcam.insect", f"{stem}.gradcam.pet",
                                            f"{stem}.gradcam.6"]
        maps = loupe.explain(model, x, [[insect, pet, 6]], target_layer="layer3")[0]
        line = next(line for line in stdout.splitlines() if line.startswith(image))
        for k, (label, cls) in enumerate((("insect", insect), ("pet", pet), (None, 6))):
            output = f"{stem}.gradcam.{label or cls}"
            entry = record["outputs"][output]
            assert (entry["class"], entry["name"], entry["dataset_class"]) == (
                cls, NAMES[cls + 1], label)
            prefix = f"{label}: " if label else ""
            assert f"{prefix}{NAMES[cls + 1]} ({cls}) {float(probabilities[cls]):.3f}" in line
            data = load_npz(out / f"{output}.npz")
            assert data["classes"].tolist() == [cls]
            np.testing.assert_allclose(data["scores"], [float(probabilities[cls])], rtol=1e-5)
            np.testing.assert_allclose(raw_maps(data)[0], maps[k].numpy(), rtol=2e-3,
                                       atol=1e-3 * float(maps[k].abs().max()))
            assert (out / f"{output}.png").is_file()
    assert len(chosen) > 2  # the choice differs between images (not always the first member)


def outputs_of(record: dict, stem: str) -> list[str]:
    return record["images"][stem]["outputs"]


def test_topk_ranks_data_set_classes_and_names_files_after_them(world, tmp_path, capsys):
    out, table = tmp_path / "out", write_table(tmp_path)
    image = world["images"] / "b.jpg"
    code, stdout, stderr = run_cli(base_args(world, out, image)
                                   + ["--class-map", str(table), "--topk", "3"], capsys)
    assert code == 0, stderr
    model, x = model_and_input(world, "b.jpg")
    with torch.no_grad():
        logits = model(x)[0]
    best = {name: max(float(logits[c]) for c in members)
            for name, members in TABLE.items() if members}
    ranked = sorted(best, key=best.get, reverse=True)[:3]  # type: ignore[arg-type]
    labels = [name.replace(" ", "_") for name in ranked]
    record = read_json(out / "explain.json")
    assert outputs_of(record, "b") == [f"b.gradcam.{label}" for label in labels]
    for name, label in zip(ranked, labels, strict=True):
        entry = record["outputs"][f"b.gradcam.{label}"]
        assert entry["dataset_class"] == name
        assert float(logits[entry["class"]]) == best[name] and entry["class"] in TABLE[name]
    assert f"b.jpg: {ranked[0]}: " in stdout


def test_shipped_coco_to_imagenet_explains_the_cat_set_on_a_real_photo(assets, tmp_path,
                                                                       capsys):
    """The shared ImageNet MobileNetV2 on a cat photo: ``--target cat`` is the domestic cat
    (281-285) that scores best, as the five cats explained in the same run show."""
    weights, photo = assets / "weights", assets / "photos" / "cat_720p.jpg"
    out = tmp_path / "out"
    code, stdout, stderr = run_cli([
        "explain", str(photo), "--model", "mobilenet_v2",
        "--weights", str(weights / "mobilenet_v2_imagenet1k_coral.pth"), "--scale", "x*2-1",
        "--patch", f"{weights / 'tf_same_padding.py'}:tf_same_padding",
        "--class-map", "coco_to_imagenet", "--target", "cat", "281", "282", "283", "284", "285",
        "--max-side", "256", "--device", "cpu", "--out", str(out)], capsys)
    assert code == 0, stderr
    record = read_json(out / "explain.json")
    cats = {c: record["outputs"][f"cat_720p.gradcam.{c}"]["score"] for c in range(281, 286)}
    entry = record["outputs"]["cat_720p.gradcam.cat"]
    assert entry["dataset_class"] == "cat" and entry["class"] == max(cats, key=cats.get)
    assert entry["score"] == cats[entry["class"]]
    assert f"cat_720p.jpg: cat: {entry['name']} ({entry['class']})" in stdout
    same = load_npz(out / f"cat_720p.gradcam.{entry['class']}.npz")
    np.testing.assert_array_equal(load_npz(out / "cat_720p.gradcam.cat.npz")["maps"],
                                  same["maps"])


def test_class_map_errors_name_the_option(world, tmp_path, capsys):
    out, table = tmp_path / "out", write_table(tmp_path)
    args = base_args(world, out) + ["--class-map", str(table)]
    assert_error(capsys, args + ["--target", "person"], "--target 'person'",
                 f"--class-map {table}", "no classifier class")
    assert_error(capsys, args + ["--topk", "5"], "--topk 5", "4 classes of --class-map")
    assert_error(capsys, base_args(world, out) + ["--class-map", str(tmp_path / "nope.json")],
                 "nope.json", "class mapping file not found")
    (tmp_path / "wide").mkdir()
    wide = write_table(tmp_path / "wide", {"insect": [0, 10]})
    assert_error(capsys, base_args(world, out) + ["--class-map", str(wide)],
                 f"--class-map {wide}", "outside 0..9")
    clash = write_table(tmp_path, {"a b": [0], "a_b": [1]})
    assert_error(capsys, base_args(world, out) + ["--class-map", str(clash)], "'a_b'")
    assert not out.exists() or not list(out.iterdir())


def test_another_class_map_into_the_same_folder_is_refused(world, tmp_path, capsys):
    out, image = tmp_path / "out", world["images"] / "a.png"
    first = write_table(tmp_path)
    assert run_cli(base_args(world, out, image) + ["--class-map", str(first), "--target", "pet"],
                   capsys)[0] == 0
    (tmp_path / "other").mkdir()
    other = write_table(tmp_path / "other", {**TABLE, "pet": [2]})
    assert_error(capsys, base_args(world, out, image) + ["--class-map", str(other), "--target",
                                                         "pet"], "class_map", "another --out")
