"""The embedded demo end to end at its small size, and its pieces."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from loupe.cli import main
from loupe.data.synthetic import make_synthetic
from loupe.demo import (
    SIZES,
    _targets,
    crf_available,
    demo_classifier_config,
    demo_methods,
    run_demo,
)


def test_targets_are_the_ground_truth_classes_padded():
    labels = torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert _targets(labels).tolist() == [[1, 3], [0, -1]]


def test_demo_methods_include_the_registered_baselines():
    methods = demo_methods()
    assert methods[:5] == ["cam", "gradcam", "saliency", "smoothgrad", "shuffle"]
    assert {"baseline-background", "baseline-gaussian"} <= set(methods)


def test_the_demo_classifier_pools_as_its_size_says(tmp_path):
    assert demo_classifier_config(SIZES["default"], 0, tmp_path).pool == "gap"
    gmp = dataclasses.replace(SIZES["small"], pool="gmp")  # the badge study's round 5
    config = demo_classifier_config(gmp, 0, tmp_path)
    assert config.pool == "gmp" and config.backbone == "small" and config.crop == 32


def test_the_default_demo_trains_the_design_the_badge_statistic_chose(tmp_path):
    """docs/synthetic-data.md, round 8: D18 (64x64 scenes, the stride-4 network with a
    16-pixel receptive field, 24 epochs) is the default."""
    config = demo_classifier_config(SIZES["default"], 0, tmp_path)
    assert config.backbone == "small-s4-local2" and config.epochs == 24 and config.crop == 64


def test_unknown_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown demo size 'huge'"):
        run_demo(tmp_path, size="huge")


@pytest.mark.slow
def test_demo_end_to_end_at_the_small_size(tmp_path, capsys):
    code = main(["demo", "--size", "small", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"report: {tmp_path / 'report.md'}" in printed
    for name in ("report.md", "results.json", "miou_vs_threshold.png", "overlays.png",
                 "maps.png", "classifier/model.pt", "classifier/model.json"):
        assert (tmp_path / name).is_file(), name
    for name in ("miou_vs_threshold.png", "overlays.png", "maps.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.width > 100

    methods = demo_methods()
    results = json.loads((tmp_path / "results.json").read_text())
    rows_expected = [methods[0], "cam+crf", *methods[1:]] if crf_available() else methods
    assert list(results["methods"]) == rows_expected
    assert list(results["badge_statistic"]) == methods
    for name, stat in results["badge_statistic"].items():
        assert stat["pairs"] + stat["left_out"] == int(
            make_synthetic(SIZES["small"].n_val, SIZES["small"].image_size, seed=1)
            .labels.sum()), name
        if stat["pairs"]:
            assert 0.0 <= stat["energy_share"] <= 1.0 and 0.0 < stat["area_share"] < 1.0
    assert "badge statistic" in printed and "| cam | " in printed
    for name, summary in results["methods"].items():
        assert len(summary["miou"]) == 20
        assert all(0.0 <= v <= 1.0 for v in summary["miou"]), name
        assert 0.0 <= summary["best_miou"] <= 1.0
        assert summary["best_miou"] == max(summary["miou"])
    assert 0.0 <= results["classifier"]["val_map"] <= 1.0

    # the report's table has one row per method, mIoU in percent within [0, 100]
    report = (tmp_path / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ")][1:]
    rows = rows[: len(rows_expected)]  # the mIoU table; the badge table follows
    assert [row.split("|")[1].strip() for row in rows][:len(rows_expected)] == rows_expected
    for row in rows:
        best = float(row.split("|")[2])
        assert 0.0 <= best <= 100.0
        assert row in printed  # the CLI prints the same table

    # an independent check of the pipeline: all-background masks score IoU(background)
    # averaged over background and the classes present in the validation masks
    size = SIZES["small"]
    val = make_synthetic(size.n_val, size.image_size, seed=1)
    background = float((val.masks == 0).float().mean())
    present = len(torch.unique(val.masks))
    expected = background / present
    assert results["methods"]["baseline-background"]["best_miou"] == pytest.approx(expected)


def test_bad_thread_count_is_refused(tmp_path, capsys):
    assert main(["demo", "--threads", "0", "--out", str(tmp_path)]) == 2
    assert "argument --threads: expected an integer >= 1" in capsys.readouterr().err
