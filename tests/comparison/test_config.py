"""The rows of a comparison, its reference, and the settings its folder is bound to; the
per-image statistics it reads from an evaluation tally."""

from __future__ import annotations

import json

import pytest
import torch

from loupe.comparison import BASELINES, comparison_rows
from loupe.comparison.config import check_settings
from loupe.evaluation.tally import Tally, per_image_confusions, per_image_stats
from loupe.metrics import confusion_stats


def test_rows_add_the_baselines_and_the_crf_rows_in_order():
    rows, reference = comparison_rows(["cam", "shuffle:smooth=0.03,n_shuffles=16"], ["cam"])
    assert [r.name for r in rows] == ["cam", "shuffle:n_shuffles=16,smooth=0.03",
                                      *BASELINES, "cam+crf"]
    assert reference == "cam"
    assert rows[1].slug == "shuffle.n_shuffles=16.smooth=0.03"
    assert rows[-1].crf and rows[-1].slug == "cam" and rows[2].baseline
    rows, _ = comparison_rows(["baseline-gaussian", "saliency"])
    assert [r.name for r in rows] == ["baseline-gaussian", "saliency", "baseline-background"]


def test_memory_options_do_not_change_the_folder():
    rows, _ = comparison_rows(["smoothgrad:n_samples=4,chunk_size=2"])
    assert rows[0].slug == "smoothgrad.n_samples=4"
    assert rows[0].options == {"n_samples": 4, "chunk_size": 2}
    with pytest.raises(ValueError, match="the same maps"):
        comparison_rows(["smoothgrad:n_samples=4,chunk_size=2", "smoothgrad:n_samples=4"])


@pytest.mark.parametrize(
    ("methods", "crf", "reference", "message"),
    [
        (["cam", "saliency"], [], "saliency", None),
        (["cam"], ["cam"], "cam+crf", None),
        (["cam"], [], "baseline-gaussian", None),
        (["cam", "cam"], [], None, "--methods gives 'cam' and 'cam', the same maps"),
        (["cam"], ["gradcam"], None, "--crf 'gradcam' is not among --methods"),
        (["cam"], ["cam", "cam"], None, "--crf gives 'cam' twice"),
        (["cam"], [], "gradcam", "--reference 'gradcam' is not one of the compared rows: cam, "),
        (["cam"], [], "cam+crf", "--reference 'cam+crf' is not one of the compared rows"),
        (["cam"], [], "nope", "--reference 'nope': unknown method 'nope'"),
        (["cam:x=1"], [], None, "method spec 'cam:x=1': method 'cam' has no option 'x'"),
    ],
)
def test_reference_and_errors(methods, crf, reference, message):
    if message is None:
        assert comparison_rows(methods, crf, reference)[1] == reference
        return
    with pytest.raises(ValueError) as error:
        comparison_rows(methods, crf, reference)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_settings_must_match_but_the_run_may_change(tmp_path):
    path = tmp_path / "compare.json"
    settings = {"dataset": {"kind": "synthetic"}, "maps": {"size": None}}
    check_settings(path, settings)  # no file yet
    path.write_text(json.dumps(settings))
    check_settings(path, settings)
    with pytest.raises(ValueError) as error:
        check_settings(path, {**settings, "maps": {"size": 24}})
    assert str(error.value) == (
        f"{path}: this folder holds a run with other settings (maps: {{'size': None}} -> "
        "{'size': 24}); use another --out or delete the folder to start over (the methods, "
        "--crf, --reference and the evaluation options may change between runs; the data "
        "set, model and map options may not)")
    path.write_text("[]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        check_settings(path, settings)


def test_per_image_stats_are_those_of_the_dense_matrices():
    g = torch.Generator().manual_seed(0)
    n, thresholds = 3, 4
    dense = torch.randint(0, 3, (5, thresholds, n, n), generator=g)
    dense[2] = 0  # an image without counted pixels
    per_image = {}
    for i in (0, 1, 2, 4):  # image 3 has no entry at all
        flat = dense[i].flatten()
        nonzero = flat.nonzero().flatten()
        per_image[i] = (nonzero, flat[nonzero])
    tally = Tally(n, ("background", "a", "b"), tuple("vwxyz"), True,
                  [dense.sum(0)], [per_image])
    stats = per_image_stats(tally, 0, thresholds)
    dense[3] = 0
    assert torch.equal(stats, confusion_stats(dense))
    for t in range(thresholds):
        assert torch.equal(stats[:, t], confusion_stats(per_image_confusions(tally, 0, t)))
    with pytest.raises(ValueError, match="more than 2 thresholds"):
        per_image_stats(tally, 0, 2)
