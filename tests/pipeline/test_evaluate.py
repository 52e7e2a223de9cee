"""``loupe evaluate`` and ``loupe report``: exact numbers against independent computations,
the sweep against one threshold at a time, bootstrap comparisons, WSOL, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from loupe.cli import main
from loupe.data.synthetic import make_synthetic
from loupe.io import save_npz
from loupe.mapsets.files import map_file_arrays
from loupe.masks import masks_from_maps, save_mask_png
from loupe.metrics import (
    bootstrap_miou_difference,
    box_from_map,
    gt_known_localization,
    max_box_accuracy,
    pxap,
    top1_localization,
)

from .conftest import SYNTHETIC, read_npz

N = 6  # data-set classes of the synthetic set (background + 5)
DATA = make_synthetic(6, 32, 0)


def numpy_confusion(pred: np.ndarray, gt: np.ndarray, n: int = N) -> np.ndarray:
    """Rows = ground truth, columns = prediction; 255 in the ground truth is left out."""
    keep = gt != 255
    return np.bincount(gt[keep] * n + pred[keep], minlength=n * n).reshape(n, n)


def numpy_miou(conf: np.ndarray) -> float:
    tp = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - tp
    return float(np.nanmean(np.where(union > 0, tp / np.maximum(union, 1), np.nan)))


@pytest.fixture(scope="module")
def folders(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    common = ["maps", *SYNTHETIC, "--model", str(tiny_run)]
    assert main([*common, "--out", str(root / "gradcam")]) == 0
    assert main([*common, "--method", "baseline-gaussian", "--out", str(root / "gauss")]) == 0
    oracle = root / "oracle"  # the ground truth itself, one one-hot map per label
    for index, sample_id in enumerate(DATA.ids):
        classes = DATA.labels[index].nonzero().flatten()
        maps = (DATA.masks[index][None] == classes[:, None, None]).float()
        save_npz(oracle / f"{sample_id}.npz",
                 **map_file_arrays(maps, classes, torch.zeros(len(classes)), -1))
    return {"root": root, "gradcam": root / "gradcam", "gauss": root / "gauss",
            "oracle": oracle}


def evaluate(out: Path, *extra: str) -> dict:
    assert main(["evaluate", *SYNTHETIC, "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_ground_truth_maps_score_one_at_every_threshold(folders, tmp_path: Path) -> None:
    results = evaluate(tmp_path / "run", "--maps", str(folders["oracle"]), "--bootstrap", "50",
                       "--overlays", "0")
    sweep = results["methods"]["oracle"]["sweep"]
    assert sweep["miou"] == [1.0] * 20 and sweep["spread"] == 0.0
    assert results["methods"]["oracle"]["miou_interval"]["low"] == 1.0


def test_sweep_equals_each_threshold_alone(folders, tmp_path: Path) -> None:
    results = evaluate(tmp_path / "sweep", "--maps", str(folders["gradcam"]), "--bootstrap", "0",
                       "--overlays", "0")
    entry = results["methods"]["gradcam"]
    curve = dict(zip(entry["sweep"]["thresholds"], entry["sweep"]["miou"], strict=True))
    best = entry["threshold"]
    for t in sorted({0.0, 0.15, 0.5, 0.95, best}):
        masks = tmp_path / f"masks-{t}"
        assert main(["masks", "--maps", str(folders["gradcam"]), "--out", str(masks),
                     "--threshold", str(t), "--no-progress"]) == 0
        alone = evaluate(tmp_path / f"alone-{t}", "--masks", str(masks), "--bootstrap", "0",
                         "--overlays", "0")
        assert alone["methods"][masks.name]["miou"] == curve[t]
        # and independently: numpy confusion of the thresholded maps against the masks
        total = np.zeros((N, N), dtype=np.int64)
        for index, sample_id in enumerate(DATA.ids):
            stored = read_npz(folders["gradcam"] / f"{sample_id}.npz")
            mask = masks_from_maps(torch.from_numpy(stored["maps"].astype(np.float32)),
                                   torch.from_numpy(stored["classes"]), t)
            total += numpy_confusion(mask.numpy(), DATA.masks[index].numpy())
        assert numpy_miou(total) == pytest.approx(curve[t], abs=1e-12)
        if t == best:
            assert entry["confusion"] == total.tolist()
            tp = np.diag(total)
            for k, name in enumerate(DATA.class_names):
                iou = entry["iou"][name]
                union = total[k].sum() + total[:, k].sum() - tp[k]
                assert (iou is None and union == 0) or iou == pytest.approx(tp[k] / union)
                if total[:, k].sum():
                    assert entry["precision"][name] == pytest.approx(tp[k] / total[:, k].sum())
                if total[k].sum():
                    assert entry["recall"][name] == pytest.approx(tp[k] / total[k].sum())


def per_image_confusions(folder: Path, threshold: float) -> torch.Tensor:
    rows = []
    for index, sample_id in enumerate(DATA.ids):
        stored = read_npz(folder / f"{sample_id}.npz")
        mask = masks_from_maps(torch.from_numpy(stored["maps"].astype(np.float32)),
                               torch.from_numpy(stored["classes"]), threshold)
        rows.append(torch.from_numpy(numpy_confusion(mask.numpy(), DATA.masks[index].numpy())))
    return torch.stack(rows)


def test_bootstrap_comparisons_against_the_best_and_the_baseline(folders, tmp_path: Path
                                                                 ) -> None:
    run = tmp_path / "run"
    results = evaluate(run, "--maps", str(folders["gradcam"]), str(folders["gauss"]),
                       str(folders["oracle"]), "--bootstrap", "200", "--bootstrap-seed", "3")
    methods = results["methods"]
    assert methods["gauss"]["method"] == "baseline-gaussian"
    found = {(c["method"], c["against"]): c for c in results["comparisons"]}
    assert set(found) == {("gradcam", "oracle"), ("gauss", "oracle"), ("gradcam", "gauss"),
                          ("oracle", "gauss")}
    assert found[("gradcam", "oracle")]["reason"] == "best"
    assert found[("gradcam", "gauss")]["reason"] == "baseline"
    conf = {name: per_image_confusions(folders[name], methods[name]["threshold"])
            for name in ("gradcam", "gauss", "oracle")}
    for (a, b), c in found.items():
        expected = bootstrap_miou_difference(conf[a], conf[b], 200, 3, 0.95)
        assert (c["observed"], c["low"], c["high"]) == pytest.approx(
            (expected.observed, expected.low, expected.high), abs=1e-12)
    report = (run / "report.md").read_text()
    for heading in ("background threshold", "bootstrap", "IoU per class"):
        assert heading in report
    assert "| gradcam | oracle | best |" in report
    assert (run / "miou_vs_threshold.png").stat().st_size > 1000
    assert (run / "overlays.png").stat().st_size > 1000


def test_localization_equals_the_metrics_functions(folders, tmp_path: Path) -> None:
    results = evaluate(tmp_path / "wsol", "--maps", str(folders["gradcam"]), "--boxes",
                       "--bootstrap", "0", "--overlays", "0")
    got = results["localization"]["gradcam"]
    maps, boxes, binary, correct = [], [], [], []
    for index, sample_id in enumerate(DATA.ids):
        stored = read_npz(folders["gradcam"] / f"{sample_id}.npz")
        gt_boxes, gt_labels = DATA.boxes(index)
        for label in sorted(set(gt_labels.tolist())):
            k = stored["classes"].tolist().index(label)
            maps.append(torch.from_numpy(stored["maps"][k].astype(np.float32)))
            edge = gt_boxes[gt_labels == label]
            boxes.append(torch.cat([edge[:, :2], edge[:, 2:] - 1], 1).long())
            mask = DATA.masks[index]
            binary.append(torch.where(mask == 255, 255, (mask == label).long()))
            correct.append(int(stored["predicted"]) == label)
    assert got["pairs"] == len(maps)
    expected = max_box_accuracy(maps, boxes)
    assert got["max_box_acc_v2"] == pytest.approx(expected.value, abs=1e-12)
    cam_boxes = [box_from_map(m, 0.2) for m in maps]
    assert got["gt_known_loc"] == pytest.approx(gt_known_localization(cam_boxes, boxes))
    predicted = torch.tensor([1 if c else 0 for c in correct])
    assert got["top1_loc"] == pytest.approx(
        top1_localization(cam_boxes, boxes, predicted, torch.ones(len(maps))))
    assert got["pxap"] == pytest.approx(pxap(maps, binary), abs=1e-12)


def test_masks_with_hand_counted_confusions(tmp_path: Path) -> None:
    folder = tmp_path / "hand"
    predictions = []
    for index, sample_id in enumerate(DATA.ids):
        gt = DATA.masks[index]
        pred = torch.roll(gt, shifts=index, dims=1)  # a shifted copy: part right, part wrong
        save_mask_png(folder / f"{sample_id}.png", pred)
        predictions.append(numpy_confusion(pred.numpy(), gt.numpy()))
    total = np.sum(predictions, axis=0)
    results = evaluate(tmp_path / "run", "--masks", str(folder), "--bootstrap", "0",
                       "--overlays", "0")
    entry = results["methods"]["hand"]
    assert entry["confusion"] == total.tolist()
    assert entry["miou"] == pytest.approx(numpy_miou(total), abs=1e-12)
    assert entry["pixel_accuracy"] == pytest.approx(np.trace(total) / total.sum())


def test_evaluate_errors_name_the_file(folders, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "small"  # maps at half the images' size
    for sample_id in DATA.ids:
        save_npz(bad / f"{sample_id}.npz", **map_file_arrays(torch.ones(1, 16, 16),
                                                               torch.tensor([1]), torch.zeros(1),
                                                               1))
    missing = tmp_path / "missing"
    missing.mkdir()
    source = folders["oracle"] / f"{DATA.ids[0]}.npz"
    (missing / source.name).write_bytes(source.read_bytes())
    (tmp_path / "empty").mkdir()
    unsure = tmp_path / "unsure"
    for sample_id in DATA.ids:
        save_mask_png(unsure / f"{sample_id}.png", torch.full((32, 32), 255))
    wrong_classes = tmp_path / "wrong"
    for sample_id in DATA.ids:
        save_npz(wrong_classes / f"{sample_id}.npz", **map_file_arrays(
            torch.ones(1, 32, 32), torch.tensor([9]), torch.zeros(1), 9))
    cases = [
        (["--maps", str(bad)], f"{bad / (DATA.ids[0] + '.npz')}: maps are 16x16"),
        (["--maps", str(missing)],
         f"--maps {missing}: no map file for 5 of the 6 images of the data set "
         f"({DATA.ids[1]!r}, {DATA.ids[2]!r}, {DATA.ids[3]!r}, {DATA.ids[4]!r}, "
         f"{DATA.ids[5]!r}); make them"),
        (["--maps", str(tmp_path / "empty")], "empty maps folder"),
        (["--maps", str(tmp_path / "nowhere")], "nowhere: folder not found"),
        (["--masks", str(unsure)], f"{unsure / (DATA.ids[0] + '.png')}: predicted label 255"),
        (["--maps", str(wrong_classes)], f"{wrong_classes / (DATA.ids[0] + '.npz')}: map "
                                         "classes must lie in 1..5"),
        ([], "give at least one --maps or --masks"),
        (["--maps", str(folders["oracle"]), "--fixed", "0.12"], "argument --fixed: expected one"),
        (["--maps", str(folders["oracle"]), str(folders["oracle"])], "same name"),
    ]
    for extra, message in cases:
        assert main(["evaluate", *SYNTHETIC, "--out", str(tmp_path / "o"), *extra]) == 2, extra
        assert message in capsys.readouterr().err
    # a worker process's error reaches the user as the same one line
    damaged = tmp_path / "damaged"
    shutil.copytree(folders["oracle"], damaged)
    (damaged / f"{DATA.ids[1]}.npz").write_bytes(b"not a zip file")
    assert main(["evaluate", *SYNTHETIC, "--out", str(tmp_path / "o"), "--maps", str(damaged),
                 "--workers", "2"]) == 2
    assert capsys.readouterr().err.strip().startswith(
        f"loupe evaluate: error: {damaged / (DATA.ids[1] + '.npz')}: cannot read map file (")


def test_an_image_without_maps_is_all_background(folders, tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    shutil.copytree(folders["oracle"], folder)
    empty = map_file_arrays(torch.zeros(0, 32, 32), torch.zeros(0, dtype=torch.long),
                            torch.zeros(0), -1)
    save_npz(folder / f"{DATA.ids[0]}.npz", **empty)
    results = evaluate(tmp_path / "run", "--maps", str(folder), "--bootstrap", "0",
                       "--overlays", "0")
    total = np.zeros((N, N), dtype=np.int64)
    for index in range(len(DATA)):
        gt = DATA.masks[index].numpy()
        total += numpy_confusion(np.zeros_like(gt) if index == 0 else gt, gt)
    assert results["methods"]["partial"]["confusion"] == total.tolist()


def test_report_puts_runs_side_by_side(folders, tmp_path: Path, capsys) -> None:
    first = tmp_path / "one"
    second = tmp_path / "two"
    evaluate(first, "--maps", str(folders["gradcam"]), "--bootstrap", "0")
    evaluate(second, "--maps", str(folders["oracle"]), "--bootstrap", "0", "--overlays", "2")
    page = tmp_path / "page.html"
    assert main(["report", str(first), str(second), "--out", str(page)]) == 0
    html = page.read_text()
    assert "<h2>one</h2>" in html and "<h2>two</h2>" in html
    # one shared plot of both runs, then the overlays of each run
    assert html.count("data:image/png;base64,") == 3 and html.count('id="shared-plot"') == 1
    assert '<table class="merged">' in html and html.count("<details>") == 2
    assert "<td>one</td><td>gradcam</td>" in html and "<td>two</td><td>oracle</td>" in html
    assert main(["report", str(tmp_path), "--out", str(page)]) == 2
    assert "not an evaluation run" in capsys.readouterr().err
