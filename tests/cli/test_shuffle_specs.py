"""Shuffle saliency's issue-10 options (class-discriminative scores, round weights, the
accumulation, relative smoothing) given as method specs to ``loupe maps``, ``loupe explain``
and ``loupe compare``: the map files are ``explain``'s maps with those options, and a bad
value is a one-line error naming the option."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from loupe import explain
from loupe.cli import main
from loupe.data.base import rgb_tensor
from loupe.data.spec import DatasetSpec, open_spec
from loupe.models import load_classifier
from tests.cli.conftest import base_args, world  # noqa: F401  (the fixture)

OPTIONS = {"n_shuffles": 2, "seed": 1, "score": "log-softmax", "smooth": 0.04,
           "weight": "softmax", "accumulate": "var", "grids": (2, 3)}
SPEC = "shuffle:" + ",".join(
    f"{k}=({','.join(map(str, v))})" if isinstance(v, tuple) else f"{k}={v}"
    for k, v in OPTIONS.items())
DATA = ["--dataset", "synthetic", "--synthetic-train", "2", "--synthetic-size", "32",
        "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.pipeline.conftest import save_tiny_run

    return save_tiny_run(tmp_path_factory.mktemp("shuffle-spec-run"))


def test_loupe_maps_files_are_explains_maps_with_the_options(tiny_run, tmp_path):
    out, plain = tmp_path / "spec", tmp_path / "plain"
    assert main(["maps", *DATA, "--model", str(tiny_run), "--method", SPEC, "--out", str(out)]) == 0
    assert main(["maps", *DATA, "--model", str(tiny_run), "--method",
                 "shuffle:n_shuffles=2,seed=1,grids=(2,3)", "--out", str(plain)]) == 0
    assert json.loads((out / "maps.json").read_text())["options"] == {
        **OPTIONS, "grids": [2, 3]}
    dataset = open_spec(DatasetSpec("synthetic", synthetic_train=2, synthetic_size=32))
    classifier = load_classifier(str(tiny_run))
    mean = torch.tensor(classifier.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(classifier.preprocessing.std).view(1, 3, 1, 1)
    for index, sample_id in enumerate(dataset.ids):
        sample = dataset[index]
        x = (rgb_tensor(sample.image)[None].float() / 255 - mean) / std
        classes = sample.labels.nonzero().flatten()
        expected = explain(classifier.model, x, [(classes - 1).tolist()], method="shuffle",
                           **OPTIONS)[0]
        expected = expected / expected.abs().amax((-2, -1), keepdim=True)
        with np.load(out / f"{sample_id}.npz") as written, \
                np.load(plain / f"{sample_id}.npz") as without:
            assert written["classes"].tolist() == classes.tolist()
            maps = torch.from_numpy(written["maps"]).float()
            torch.testing.assert_close(maps, expected, atol=2e-3, rtol=0)  # float16 files
            assert not np.allclose(written["maps"], without["maps"], atol=0.05)


def test_loupe_explain_takes_the_options_as_a_spec(world, tmp_path, capsys):  # noqa: F811
    out, keywords = tmp_path / "spec", tmp_path / "keywords"
    image = world["images"] / "a.png"
    assert main([*base_args(world, out, image), "--method", SPEC, "--target", "3"]) == 0
    option_args = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                   for k, v in OPTIONS.items()]
    assert main([*base_args(world, keywords, image), "--method", "shuffle",
                 "--option", *option_args, "--target", "3"]) == 0
    (by_spec,) = out.glob("a.shuffle.*.3.npz")
    assert "score=log-softmax" in by_spec.name and "weight=softmax" in by_spec.name
    with np.load(by_spec) as a, np.load(keywords / "a.shuffle.3.npz") as b:
        assert np.array_equal(a["maps"], b["maps"])
    capsys.readouterr()
    assert main([*base_args(world, tmp_path / "bad", image), "--method",
                 "shuffle:score=logits", "--target", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "score must be one of logit, log-softmax, logit-minus-mean; got 'logits'" in err
    assert "\n" not in err


def test_loupe_compare_ranks_a_shuffle_spec(tiny_run, tmp_path):
    out = tmp_path / "compare"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["compare", *DATA, "--model", str(tiny_run), "--methods", SPEC, "cam",
                     "--bootstrap", "0", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    name = "shuffle:accumulate=var,grids=(2,3),n_shuffles=2,score=log-softmax,seed=1," \
           "smooth=0.04,weight=softmax"
    assert name in results["ranking"] and results["reference"] == name
    folder = out / "maps" / ("shuffle.accumulate=var.grids=2x3.n_shuffles=2.score=log-softmax"
                             ".seed=1.smooth=0.04.weight=softmax")
    assert json.loads((folder / "maps.json").read_text())["options"]["accumulate"] == "var"
