"""``--labels-file``: IRN's pickled ``cls_labels.npy`` is refused unless ``--trust-pickle``
converts it (once) to its safe ``.npz``; tested on a copy of the real file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from loupe.cli import main


@pytest.fixture
def voc_run(assets, tmp_path):
    """The real VOC train masks as a "method" (two images), and a copy of cls_labels.npy."""
    voc = assets / "voc"
    ids = (voc / "voc12" / "train.txt").read_text().split()[:2]
    masks = tmp_path / "gt-masks"
    masks.mkdir()
    for sample_id in ids:
        shutil.copy(voc / "SegmentationClassAug" / f"{sample_id}.png", masks)
    labels = tmp_path / "labels" / "cls_labels.npy"
    labels.parent.mkdir()
    shutil.copy(voc / "voc12" / "cls_labels.npy", labels)
    argv = ["evaluate", "--masks", str(masks), "--dataset", "voc", "--root", str(voc),
            "--split-file", str(voc / "voc12" / "train.txt"), "--limit", "2",
            "--bootstrap", "0", "--overlays", "0", "--device", "cpu", "--no-progress"]
    return argv, labels, tmp_path


def test_pickled_labels_file_is_refused_without_trust_pickle(voc_run, capsys):
    argv, labels, tmp = voc_run
    code = main([*argv, "--labels-file", str(labels), "--out", str(tmp / "eval")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"loupe evaluate: error: {labels}: a pickled .npy")
    assert "--trust-pickle" in err[0]
    assert not (tmp / "eval" / "results.json").exists()
    assert not labels.with_suffix(".npz").exists()


def test_trust_pickle_converts_once_and_the_safe_form_is_used_after(voc_run, capsys, caplog):
    argv, labels, tmp = voc_run
    code = main([*argv, "--labels-file", str(labels), "--trust-pickle",
                 "--out", str(tmp / "eval")])
    assert code == 0, capsys.readouterr().err
    safe = labels.with_suffix(".npz")
    assert f"give --labels-file {safe} from now on" in caplog.text
    with np.load(safe, allow_pickle=False) as data:
        assert "2007000032" in data["ids"].tolist() and data["labels"].shape[1] == 20
    results = json.loads((tmp / "eval" / "results.json").read_text())
    assert results["dataset"]["labels_file"] == str(safe)
    assert results["methods"]["gt-masks"]["miou"] == pytest.approx(1.0)
    code = main([*argv, "--labels-file", str(safe), "--out", str(tmp / "eval2")])
    assert code == 0, capsys.readouterr().err


def test_help_says_pickles_are_refused(capsys):
    assert main(["maps", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "a pickled .npy such as IRN's cls_labels.npy only with --trust-pickle" in text
    assert "unpickling runs code from the file" in text
