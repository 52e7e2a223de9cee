"""bench/study.py: its statistics and bootstrap against loupe's metrics, the post-hoc blur
against shuffle's ``smooth`` option, and a tiny end-to-end run on the synthetic set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from loupe import explain
from loupe.metrics import bootstrap_miou_difference, mean_iou, sweep_confusions, sweep_summary
from loupe.metrics.sweep import default_thresholds

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import study  # noqa: E402
import study_eval  # noqa: E402


def _random_case(seed: int, images: int = 12, classes: int = 5, size: int = 16):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(images, 2, size, size, generator=g) - 0.2
    labels = torch.randint(1, classes, (images, 2), generator=g)
    gt = torch.randint(0, classes, (images, size, size), generator=g)
    gt[:, :2] = 255
    return maps, labels, gt


def test_statistics_give_loupes_miou_curve():
    maps, labels, gt = _random_case(0)
    thresholds = default_thresholds()
    per_image = sweep_confusions(maps, labels, gt, thresholds, 5, per_image=True)
    stats = study_eval.confusion_stats(per_image)
    curve = study_eval.miou_from_stats(stats.sum(0))
    expected = torch.tensor(sweep_summary(per_image.sum(0), thresholds).miou, dtype=torch.float64)
    torch.testing.assert_close(curve, expected, rtol=0, atol=1e-12)
    # a class absent from both ground truth and prediction is left out, as mean_iou does
    one = per_image[0, 3]
    torch.testing.assert_close(study_eval.miou_from_stats(study_eval.confusion_stats(one)),
                               mean_iou(one), rtol=0, atol=1e-12)


def test_bootstrap_matches_loupes_paired_bootstrap_and_rechooses_thresholds():
    thresholds = default_thresholds()
    maps, labels, gt = _random_case(1)
    conf_a = sweep_confusions(maps, labels, gt, thresholds, 5, per_image=True)
    conf_b = sweep_confusions(maps.pow(3), labels, gt, thresholds, 5, per_image=True)
    a, b = study_eval.confusion_stats(conf_a), study_eval.confusion_stats(conf_b)
    at_best, at_fixed = study_eval.paired_differences(
        a, b, ("a", "b"), thresholds.tolist(), 0.15, n=200, seed=3)
    j = 3  # 0.15
    reference = bootstrap_miou_difference(conf_a[:, j], conf_b[:, j], n=200, seed=3)
    assert at_fixed.observed == pytest.approx(100 * reference.observed, abs=1e-9)
    assert at_fixed.low == pytest.approx(100 * reference.low, abs=1e-9)
    assert at_fixed.high == pytest.approx(100 * reference.high, abs=1e-9)
    best_a = sweep_summary(conf_a.sum(0), thresholds).best_miou
    best_b = sweep_summary(conf_b.sum(0), thresholds).best_miou
    assert at_best.observed == pytest.approx(100 * (best_a - best_b), abs=1e-9)
    # a method against itself: every resample gives 0
    same = study_eval.paired_differences(a, a, ("a", "a"), thresholds.tolist(), 0.15, n=50)
    assert all(d.low == d.high == d.observed == 0 for d in same)
    with pytest.raises(ValueError, match="common threshold"):
        study_eval.paired_differences(a, b, ("a", "b"), thresholds.tolist(), 0.12, n=10)
    with pytest.raises(ValueError, match="different images"):
        study_eval.paired_differences(a[:5], b, ("a", "b"), thresholds.tolist(), 0.15, n=10)


def test_post_hoc_blur_equals_shuffles_smooth_option():
    """The study's post-hoc blur and shuffle's ``smooth`` option both equal an independent
    Gaussian blur (torchvision's: kernel 2 ceil(3 sigma) + 1, reflect border)."""
    from torchvision.transforms.functional import gaussian_blur as torchvision_blur

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    images = torch.rand(2, 3, 24, 20)
    options = dict(method="shuffle", n_shuffles=4, seed=0)
    raw = explain(model, images, [[0, 2], [1, 2]], smooth=0.0, **options)
    # shuffle's sigma is a fraction of the shorter side: 1.5 / 20 of 20 pixels = 1.5 pixels
    smoothed = explain(model, images, [[0, 2], [1, 2]], smooth=1.5 / 20, **options)
    independent = torchvision_blur(raw, kernel_size=[11, 11], sigma=[1.5, 1.5])
    assert (independent - raw).abs().amax() > 0.05 * raw.abs().amax()  # the blur does something
    scale = raw.abs().amax()  # compare relative to the maps' size (gradients are small)
    torch.testing.assert_close(study_eval.gaussian_blur(raw, 1.5) / scale, independent / scale)
    torch.testing.assert_close(smoothed / scale, independent / scale)
    assert study_eval.smoothing_sigma(480, 640) == pytest.approx(0.04 * 480)


def test_tiny_study_on_the_synthetic_set(tmp_path):
    work, docs = tmp_path / "work", tmp_path / "docs"
    argv = ["--work", str(work), "--docs", str(docs), "--sets", "synthetic", "--synthetic",
            "16", "12", "32", "--epochs", "1", "--bootstrap", "50",
            "--stages", "train", "maps", "evaluate", "figures",
            "--only", "baseline-background", "baseline-gaussian", "cam", "shuffle-T8",
            "shuffle-T8-pad"]
    assert study.main(argv) == 0
    results = json.loads((work / "synthetic" / "results.json").read_text())
    assert sorted(results["images"]) == ["baseline-background", "baseline-gaussian", "cam",
                                         "shuffle-T8", "shuffle-T8-pad"]
    # all-background maps: only the background class is ever right, by hand from the masks
    from loupe.data.spec import DatasetSpec, open_spec

    val = open_spec(DatasetSpec("synthetic", split="val", synthetic_train=16,
                                            synthetic_val=12, synthetic_size=32))
    masks = torch.stack([val[i].mask for i in range(len(val))])
    present = int((torch.bincount(masks.flatten(), minlength=6)[1:] > 0).sum())
    expected = float((masks == 0).double().mean()) / (1 + present)
    summary = results["summaries"]["baseline-background.raw"]
    assert summary["best_miou"] == pytest.approx(expected, abs=1e-9)
    # the ablation is compared with its reference, on the same 12 images
    ablations = results["differences"]["ablations-raw"]
    assert {(d["a"], d["b"], d["images"]) for d in ablations} == {
        ("shuffle-T8-pad", "shuffle-T8", 12)}
    assert (docs / "figures" / "study-synthetic-raw.png").stat().st_size > 1000
    commands = (work / "commands.sh").read_text().splitlines()
    assert commands[0].startswith("loupe train --dataset synthetic")
    assert sum(line.startswith("loupe maps") for line in commands) == 5


def test_voc_samples_become_index_masks(assets, tmp_path):
    import study_data
    from PIL import Image

    from loupe.masks.palette import load_mask_png

    info = study_data.prepare_voc_samples(assets, tmp_path / "voc")
    assert info == {"images": 3, "maps": 3}
    labels = json.loads((tmp_path / "voc" / "labels.json").read_text())
    assert labels == {"1": [1], "114": [3], "23": [17]}  # aeroplane, bird, sheep
    mask = load_mask_png(tmp_path / "voc" / "masks" / "1.png")
    assert set(mask.unique().tolist()) == {0, 1, 255}
    odd = tmp_path / "odd.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(odd)
    with pytest.raises(ValueError, match="odd.png: colours outside the VOC palette"):
        study_data.voc_index_mask(odd)


def test_coco_pixels_without_a_counterpart_are_ignored(assets, tmp_path):
    import study_data

    from loupe.data import COCO_CLASSES, class_mapping, load_name_table, open_dataset
    from loupe.masks.palette import load_mask_png

    info = study_data.prepare_coco(assets, tmp_path / "coco")
    assert (info["images"], info["of"], info["maps"]) == (106, 128, 230)
    source = open_dataset("yolo", assets / "coco128-seg", "train2017",
                          names=list(COCO_CLASSES), images=False)
    mappable = torch.tensor([bool(m) for m in class_mapping(source.class_names,
                                                            load_name_table())])
    labels = json.loads((tmp_path / "coco" / "labels.json").read_text())
    person = COCO_CLASSES.index("person") + 1
    checked = 0
    for sample_id in sorted(labels)[:12]:
        original = source[source.ids.index(sample_id)].mask
        derived = load_mask_png(tmp_path / "coco" / "masks" / f"{sample_id}.png")
        unmapped = (original > 0) & ~mappable[original]
        assert bool((derived[unmapped] == 255).all())
        assert torch.equal(derived[~unmapped], original[~unmapped])
        visible = {c for c in original.unique().tolist() if c > 0 and mappable[c]}
        assert visible <= set(labels[sample_id])  # labels: every mappable class of the file
        assert all(mappable[c] for c in labels[sample_id])
        checked += int(bool((original == person).any()))
    assert checked > 0  # some of these images show people, now ignored
    assert all(person not in v for v in labels.values())
    # 000000000025 shows only giraffes, which have no ImageNet class: left out
    assert "000000000025" not in labels
