"""``loupe evaluate --ignore-classes / --class-map``: ignoring a class equals evaluating a copy
of the data set whose masks have its pixels at 255 (and whose maps of it are the all-zero maps
``loupe maps`` writes for a class without a counterpart), checked against that copy and against
numpy confusion matrices at every threshold; maps and mask sources, the bootstrap, box metrics
unchanged, the report, the class map, and the errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from loupe.cli import main
from loupe.data.synthetic import make_synthetic
from loupe.evaluation.sources import ignored_class_indices
from loupe.io import save_npz
from loupe.mapsets.files import map_file_arrays
from loupe.masks import masks_from_maps, save_mask_png
from loupe.masks.palette import load_mask_png

from .conftest import FOLDER_SIZES, SYNTHETIC, read_npz, write_folder_dataset

N = 6  # background + class1..class5
NAMES = ["background"] + [f"class{k}" for k in range(1, N)]
X = 5  # class5: in images b, c and d of the folder data set (with class2 in b, class1 in d)
IDS = list(FOLDER_SIZES)
THRESHOLDS = [round(k / 20, 6) for k in range(20)]


def numpy_confusion(pred: np.ndarray, gt: np.ndarray, n: int = N) -> np.ndarray:
    keep = gt != 255
    return np.bincount(gt[keep] * n + pred[keep], minlength=n * n).reshape(n, n)


def numpy_iou(conf: np.ndarray) -> np.ndarray:
    tp = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - tp
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def class_maps(mask: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One map per class of ``mask``: its region shifted by 3 pixels (so it spills onto other
    classes and the background) plus seeded noise, so the masks change with the threshold."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.tensor([c for c in mask.unique().tolist() if c not in (0, 255)])
    region = (mask[None] == classes[:, None, None]).float()
    maps = torch.roll(region, shifts=(3, 3), dims=(1, 2)) + 0.6 * torch.rand(
        region.shape, generator=g)
    return maps, classes


def write_maps(folder: Path, masks: dict[str, torch.Tensor], zero: int | None = None) -> None:
    """Map files of every image; the maps of class ``zero`` all-zero (no counterpart)."""
    for i, (sample_id, mask) in enumerate(masks.items()):
        maps, classes = class_maps(mask, i)
        if zero is not None:
            maps[classes == zero] = 0
        save_npz(folder / f"{sample_id}.npz", **map_file_arrays(
            maps, classes, torch.zeros(len(classes)), int(classes[0]) if len(classes) else -1))


def hand_copy(root: Path, copy: Path, ignored: list[int]) -> None:
    """The data set with the pixels of ``ignored`` classes set to 255 in its masks."""
    shutil.copytree(root, copy)
    for path in sorted((copy / "masks").glob("*.png")):
        mask = load_mask_png(path)
        mask[torch.isin(mask, torch.tensor(ignored))] = 255
        save_mask_png(path, mask)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ignore")
    root = write_folder_dataset(base / "data")
    masks = {i: load_mask_png(root / "masks" / f"{i}.png") for i in IDS}
    assert all(bool((masks[i] == X).any()) for i in ("b", "c", "d"))
    write_maps(base / "maps", masks)  # class5's maps are real and spill over
    write_maps(base / "zeroed", masks, zero=X)  # the maps written for a class without one
    pred = base / "pred"  # mask files: the ground truth shifted, class5 labels included
    for i, mask in masks.items():
        save_mask_png(pred / f"{i}.png", torch.roll(mask.masked_fill(mask == 255, 0), 4, 1))
    hand_copy(root, base / "copy", [X])
    return {"root": root, "maps": base / "maps", "zeroed": base / "zeroed", "pred": pred,
            "copy": base / "copy", "base": base}


def evaluate(root: Path, out: Path, *extra: str) -> dict:
    assert main(["evaluate", "--dataset", "folder", "--root", str(root), "--out", str(out),
                 "--no-progress", "--overlays", "0", *extra]) == 0
    return json.loads((out / "results.json").read_text())


def without(per_class: dict, name: str) -> dict:
    assert per_class[name] is None  # in the copy the class has no pixel left: NaN
    return {k: v for k, v in per_class.items() if k != name}


def test_ignoring_a_class_equals_the_hand_made_copy(data, tmp_path: Path) -> None:
    sources = ["--maps", str(data["maps"]), "--masks", str(data["pred"]),
               "--bootstrap", "60", "--bootstrap-seed", "1"]
    got = evaluate(data["root"], tmp_path / "ignore", *sources, "--ignore-classes", "class5")
    assert got["ignored_classes"] == ["class5"]
    # the copy: class5 at 255 in the masks, its maps all-zero, its mask labels background
    zeroed = tmp_path / "maps"
    write_maps(zeroed, {i: load_mask_png(data["root"] / "masks" / f"{i}.png") for i in IDS},
               zero=X)
    pred = tmp_path / "pred"
    for path in sorted(data["pred"].glob("*.png")):
        mask = load_mask_png(path)
        save_mask_png(pred / path.name, mask.masked_fill(mask == X, 0))
    want = evaluate(data["copy"], tmp_path / "copy", "--maps", str(zeroed), "--masks", str(pred),
                    "--bootstrap", "60", "--bootstrap-seed", "1")
    assert want["ignored_classes"] == []
    for name in ("maps", "pred"):
        a, b = got["methods"][name], want["methods"][name]
        assert a["confusion"] == b["confusion"]
        assert a["miou"] == b["miou"] and a["threshold"] == b["threshold"]
        assert a.get("sweep") == b.get("sweep")  # the mIoU at every threshold
        assert a["miou_interval"] == b["miou_interval"]
        for key in ("iou", "precision", "recall"):
            assert "class5" not in a[key]
            assert a[key] == without(b[key], "class5")
    assert got["comparisons"] == want["comparisons"] and got["comparisons"]
    assert "sweep" in got["methods"]["maps"] and got["methods"]["pred"]["threshold"] is None


def test_every_threshold_against_numpy(data, tmp_path: Path) -> None:
    got = evaluate(data["root"], tmp_path / "run", "--maps", str(data["maps"]),
                   "--bootstrap", "0", "--ignore-classes", "class5")["methods"]["maps"]
    plain = evaluate(data["root"], tmp_path / "plain", "--maps", str(data["maps"]),
                     "--bootstrap", "0")["methods"]["maps"]
    curve, maps_kept = [], []
    for t in THRESHOLDS:
        total = np.zeros((N, N), dtype=np.int64)
        with_x_maps = np.zeros((N, N), dtype=np.int64)
        for sample_id in IDS:
            gt = load_mask_png(data["root"] / "masks" / f"{sample_id}.png").numpy()
            counted = np.where(gt == X, 255, gt)
            stored = read_npz(data["maps"] / f"{sample_id}.npz")
            maps = torch.from_numpy(stored["maps"].astype(np.float32))
            classes = torch.from_numpy(stored["classes"])
            keep = classes != X  # class5 leaves the label space: no map, no ground truth
            total += numpy_confusion(masks_from_maps(maps[keep], classes[keep], t).numpy(),
                                     counted)
            with_x_maps += numpy_confusion(masks_from_maps(maps, classes, t).numpy(), counted)
        iou = numpy_iou(total)
        assert np.isnan(iou[X])
        curve.append(float(np.nanmean(iou)))
        maps_kept.append(float(np.nanmean(numpy_iou(with_x_maps)[:X])))
        if t == got["threshold"]:
            assert got["confusion"] == total.tolist()
            assert list(got["iou"]) == NAMES[:X]
            for k in range(X):
                assert got["iou"][NAMES[k]] == pytest.approx(iou[k], abs=1e-12)
    assert got["sweep"]["miou"] == pytest.approx(curve, abs=1e-12)
    assert got["sweep"]["thresholds"] == THRESHOLDS
    # the test can fail: without ignoring, class5 is in the mean; and had its (spilling) maps
    # been kept, they would have taken pixels from the other classes
    assert plain["sweep"]["miou"] != pytest.approx(curve, abs=1e-6)
    assert maps_kept != pytest.approx(curve, abs=1e-6)


def test_zero_maps_of_the_class_equal_the_plain_hand_copy(data, tmp_path: Path) -> None:
    """The class-map situation: the maps of the class are all zero, so ignoring it is exactly
    the hand-made copy (masks at 255), with the very same map files."""
    got = evaluate(data["root"], tmp_path / "ignore", "--maps", str(data["zeroed"]),
                   "--bootstrap", "40", "--ignore-classes", "class5")["methods"]["zeroed"]
    want = evaluate(data["copy"], tmp_path / "copy", "--maps", str(data["zeroed"]),
                    "--bootstrap", "40")["methods"]["zeroed"]
    assert got["sweep"] == want["sweep"] and got["confusion"] == want["confusion"]
    assert got["miou_interval"] == want["miou_interval"]
    assert got["iou"] == without(want["iou"], "class5")
    # and without ignoring, class5's ground truth counts: it is missed (IoU 0) in the mean
    plain = evaluate(data["root"], tmp_path / "plain", "--maps", str(data["zeroed"]),
                     "--bootstrap", "0")["methods"]["zeroed"]
    assert plain["iou"]["class5"] == 0.0 and plain["miou"] < got["miou"]


def test_two_ignored_classes_and_the_report(data, tmp_path: Path) -> None:
    run = tmp_path / "run"
    got = evaluate(data["root"], run, "--maps", str(data["zeroed"]), "--bootstrap", "0",
                   "--ignore-classes", "class5", "class2", "class5", "--overlays", "2")
    copy = tmp_path / "copy"
    hand_copy(data["root"], copy, [2, 5])
    zeroed = tmp_path / "zeroed"
    for path in sorted(data["zeroed"].glob("*.npz")):
        stored = read_npz(path)
        stored["maps"][stored["classes"] == 2] = 0
        save_npz(zeroed / path.name, **stored)
    want = evaluate(copy, tmp_path / "want", "--maps", str(zeroed), "--names", "zeroed",
                    "--bootstrap", "0")
    assert got["ignored_classes"] == ["class2", "class5"]
    a, b = got["methods"]["zeroed"], want["methods"]["zeroed"]
    assert a["sweep"] == b["sweep"] and a["confusion"] == b["confusion"]
    assert a["iou"] == without(without(b["iou"], "class2"), "class5")
    report = (run / "report.md").read_text()
    lines = [line for line in report.splitlines() if line.startswith("Ignored classes")]
    assert lines == ["Ignored classes, not counted and left out of the mean and the per-class "
                     "table: class2, class5."]
    assert "| class1 |" in report and "| class2 |" not in report and "| class5 |" not in report
    assert (run / "overlays.png").is_file()


def test_class_map_ignores_exactly_the_unmapped_classes(data, tmp_path: Path) -> None:
    table = tmp_path / "map.json"
    table.write_text(json.dumps({"class1": [0], "class2": [1, 7], "class3": [2]}))
    common = ["--maps", str(data["maps"]), "--masks", str(data["pred"]), "--bootstrap", "30"]
    mapped = evaluate(data["root"], tmp_path / "mapped", *common, "--class-map", str(table))
    named = evaluate(data["root"], tmp_path / "named", *common,
                     "--ignore-classes", "class4", "class5")
    assert mapped["ignored_classes"] == ["class4", "class5"]
    assert mapped["class_map"] == str(table) and named["class_map"] is None
    assert mapped["methods"] == named["methods"]
    both = evaluate(data["root"], tmp_path / "both", *common, "--class-map", str(table),
                    "--ignore-classes", "class1")
    assert both["ignored_classes"] == ["class1", "class4", "class5"]
    assert set(both["methods"]["maps"]["iou"]) == {"background", "class2", "class3"}
    report = (tmp_path / "both" / "report.md").read_text()
    assert f"Ignored classes (with --class-map {table})" in report


def test_wsol_box_metrics_are_unaffected(tmp_path: Path) -> None:
    synthetic = make_synthetic(6, 32, 0)
    folder = tmp_path / "maps"
    for index, sample_id in enumerate(synthetic.ids):
        maps, classes = class_maps(synthetic.masks[index], index)
        save_npz(folder / f"{sample_id}.npz", **map_file_arrays(
            maps, classes, torch.zeros(len(classes)), int(classes[-1])))
    ignored = synthetic.class_names[int(synthetic.labels.sum(0)[1:].argmax()) + 1]
    runs = {}
    for name, extra in (("plain", []), ("ignore", ["--ignore-classes", ignored])):
        assert main(["evaluate", *SYNTHETIC, "--maps", str(folder), "--boxes", "--bootstrap",
                     "0", "--overlays", "0", "--out", str(tmp_path / name), *extra]) == 0
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    # the WSOL figures count every pair; CAM's ILSVRC errors leave the ignored class out
    plain, ignore = (dict(runs[name]["localization"]["maps"]) for name in ("plain", "ignore"))
    plain_ilsvrc, ignore_ilsvrc = plain.pop("ilsvrc"), ignore.pop("ilsvrc")
    assert ignore == plain and ignore["pairs"] > 0
    assert plain_ilsvrc["pairs"] == plain["pairs"] > ignore_ilsvrc["pairs"] > 0
    assert ignored not in runs["ignore"]["methods"]["maps"]["iou"]
    assert runs["ignore"]["methods"]["maps"]["sweep"] != runs["plain"]["methods"]["maps"]["sweep"]


def test_ignored_class_indices() -> None:
    assert ignored_class_indices(NAMES) == ()
    assert ignored_class_indices(NAMES, ["class3", "class1", "class3"]) == (1, 3)
    with pytest.raises(ValueError, match=r"'Class3' is not a class of the data set; close "
                                         r"matches: 'class3'"):
        ignored_class_indices(NAMES, ["Class3"])
    with pytest.raises(ValueError, match=r"'person' is not a class .*the classes are "
                                         r"'background', 'class1'"):
        ignored_class_indices(NAMES, ["person"])
    with pytest.raises(ValueError, match="class 0 is the background"):
        ignored_class_indices(NAMES, ["background"])
    with pytest.raises(ValueError, match="no class but the background"):
        ignored_class_indices(NAMES, NAMES[1:])


def test_errors_name_the_argument(data, tmp_path: Path, capsys) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"clas1": [0]}))
    nothing = tmp_path / "nothing.json"
    nothing.write_text(json.dumps({"class1": []}))
    cases = [
        (["--ignore-classes", "clas5"],
         "--ignore-classes 'clas5' is not a class of the data set; close matches: 'class5'"),
        (["--ignore-classes", "background"],
         "--ignore-classes 'background': class 0 is the background of the masks"),
        (["--class-map", str(tmp_path / "nowhere.json")],
         f"--class-map {tmp_path / 'nowhere.json'}: class mapping file not found"),
        (["--class-map", str(bad_json)], f"--class-map {bad_json}: not valid JSON"),
        (["--class-map", str(typo)],
         f"--class-map {typo}: class mapping names not in the data set's classes: ['clas1']"),
        # the shipped table serves data sets with some COCO classes; this one has none
        (["--class-map", "coco_to_imagenet"],
         "--class-map coco_to_imagenet: no class of the data set has an entry"),
        (["--class-map", str(nothing)], "leave no class but the background"),
    ]
    for extra, message in cases:
        assert main(["evaluate", "--dataset", "folder", "--root", str(data["root"]), "--maps",
                     str(data["maps"]), "--no-progress", "--out", str(tmp_path / "o"),
                     *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err, (extra, err)


COCO_WITHOUT_IMAGENET = {  # the 23 classes coco_to_imagenet.json documents as unmapped
    "person", "fire hydrant", "stop sign", "giraffe", "suitcase", "frisbee", "snowboard", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "wine glass", "fork", "knife",
    "sandwich", "carrot", "donut", "cake", "oven", "book", "scissors", "toothbrush",
}


def test_real_coco128_through_the_shipped_table(assets: Path, tmp_path: Path) -> None:
    from loupe.data.spec import DatasetSpec, open_spec

    root = assets / "coco128-seg"
    spec = DatasetSpec(kind="yolo", root=str(root), split="train2017", class_names="coco",
                       limit=8)
    dataset = open_spec(spec, images=False)
    names = list(dataset.class_names)
    unmapped = torch.tensor([name in COCO_WITHOUT_IMAGENET for name in names])
    pred = tmp_path / "shifted"
    total = np.zeros((len(names), len(names)), dtype=np.int64)
    people = 0
    for index in range(8):
        sample = dataset[index]
        gt = sample.mask
        shifted = torch.roll(gt.masked_fill(gt == 255, 0), shifts=(9, -13), dims=(0, 1))
        save_mask_png(pred / f"{sample.id}.png", shifted)
        counted = torch.where(unmapped[gt.clamp(max=len(names) - 1)] & (gt != 255), 255, gt)
        people += int((gt == names.index("person")).sum())
        total += numpy_confusion(torch.where(unmapped[shifted], 0, shifted).numpy(),
                                 counted.numpy(), len(names))
    assert people > 0  # coco128's first images show people
    out = tmp_path / "run"
    assert main(["evaluate", "--dataset", "yolo", "--root", str(root), "--split", "train2017",
                 "--class-names", "coco", "--limit", "8", "--masks", str(pred),
                 "--class-map", "coco_to_imagenet", "--bootstrap", "0", "--overlays", "0",
                 "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "person" in results["ignored_classes"]
    assert set(results["ignored_classes"]) == COCO_WITHOUT_IMAGENET
    entry = results["methods"]["shifted"]
    assert entry["confusion"] == total.tolist()
    assert entry["miou"] == pytest.approx(float(np.nanmean(numpy_iou(total))), abs=1e-12)
    assert "person" not in entry["iou"] and "zebra" in entry["iou"]
