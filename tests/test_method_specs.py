"""Method specs ``name:key=value,...``: parsing, the canonical form, slugs, one-line errors,
and the same maps as keyword options through ``explain``, ``loupe explain`` and
``loupe maps``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import loupe
from loupe import explain, format_method_spec, parse_method_spec
from loupe.cli import main
from loupe.method_specs import format_value, method_slug, parse_value
from tests.cli.conftest import base_args, world  # noqa: F401  (the fixture)
from tests.test_registry import tiny_resnet


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cam", ("cam", {})),
        ("shuffle:smooth=0.03,n_shuffles=16", ("shuffle", {"smooth": 0.03, "n_shuffles": 16})),
        (" shuffle : grids=(2,3,4) , jitter=FALSE , n-shuffles=8 ",
         ("shuffle", {"grids": (2, 3, 4), "jitter": False, "n_shuffles": 8})),
        ("shuffle:grids=(4),offset=pad,generator=none",
         ("shuffle", {"grids": (4,), "offset": "pad", "generator": None})),
        ("shuffle:grids=(4,),smooth=1e-2", ("shuffle", {"grids": (4,), "smooth": 0.01})),
        ("baseline-gaussian:sigma=0.5", ("baseline-gaussian", {"sigma": 0.5})),
    ],
)
def test_parse(spec, expected):
    name, options = parse_method_spec(spec)
    assert (name, options) == expected
    assert all(type(options[k]) is type(v) for k, v in expected[1].items())  # 8 stays an int


def test_nested_and_empty_tuples_and_the_option_form():
    assert parse_value("((1,2),(3.5,true),())") == ((1, 2), (3.5, True), ())
    assert parse_value("2,3") == (2, 3)  # --option grids=2,3 keeps working
    assert parse_value("cyclic") == "cyclic" and parse_value("-4") == -4


SCALARS = (st.integers(-10**6, 10**6) | st.booleans() | st.none()
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text("abcdefghijkmopqrsuvwxyz_", min_size=1, max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.tuples(inner, inner) | st.tuples(inner),
                      max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_format_value_reads_back(value):
    # the alphabet has no l, n, t, digits: no "true", "false", "none", "inf", "nan", numbers
    assert parse_value(format_value(value)) == value


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["n_shuffles", "smooth", "grids", "offset", "seed"]),
                       VALUES, max_size=4))
def test_format_method_spec_reads_back_with_sorted_keys(options):
    spec = format_method_spec("shuffle", options)
    assert parse_method_spec(spec) == ("shuffle", options)
    assert list(parse_method_spec(spec)[1]) == sorted(options)


def test_slug_sorts_keys_and_keeps_file_names_plain():
    assert method_slug("gradcam", {}) == "gradcam"
    assert method_slug("shuffle", {"smooth": 0.03, "grids": (2, 3, 4), "offset": "a/b"}) == (
        "shuffle.grids=2x3x4.offset=a_b.smooth=0.03")
    assert format_method_spec("shuffle", {"smooth": 0.03, "grids": (2, 3, 4)}) == (
        "shuffle:grids=(2,3,4),smooth=0.03")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gradcan", "unknown method 'gradcan'; choose one of: "),
        ("shufle:n_shuffles=8", "method spec 'shufle:n_shuffles=8': unknown method 'shufle'"),
        ("shuffle:smoth=0.03", "method spec 'shuffle:smoth=0.03': method 'shuffle' has no "
                               "option 'smoth'; its options are: n_shuffles, "),
        ("shuffle:grids=2,3", "method spec 'shuffle:grids=2,3': '3' is not KEY=VALUE (a tuple "
                              "is written in parentheses: grids=(2,3,4))"),
        ("shuffle:", "method spec 'shuffle:': nothing after ':'"),
        ("shuffle:grids=(2,3", "method spec 'shuffle:grids=(2,3': unbalanced '('"),
        ("shuffle:seed=1)", "method spec 'shuffle:seed=1)': unbalanced ')'"),
        ("shuffle:seed=1,seed=2", "method spec 'shuffle:seed=1,seed=2': option 'seed' is "
                                  "given twice"),
        ("shuffle:seed=", "method spec 'shuffle:seed=': 'seed=' is not KEY=VALUE"),
        ("", "a method spec must be a non-empty string"),
    ],
)
def test_errors_are_one_line_and_name_the_spec(spec, message):
    with pytest.raises(ValueError) as error:
        parse_method_spec(spec)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def model():
    return tiny_resnet()


def test_explain_takes_a_spec_and_gives_the_maps_of_the_options(model):
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    by_spec = explain(model, images, 3, method="smoothgrad:n_samples=3,seed=5")
    by_keywords = explain(model, images, 3, method="smoothgrad", n_samples=3, seed=5)
    mixed = explain(model, images, 3, method="smoothgrad:n_samples=3", seed=5)
    assert torch.equal(by_spec, by_keywords) and torch.equal(mixed, by_keywords)
    with pytest.raises(ValueError, match="method spec 'smoothgrad:seed=5' and the keyword "
                                         "arguments both set 'seed'; give each option once"):
        explain(model, images, 3, method="smoothgrad:seed=5", seed=5)
    with pytest.raises(ValueError, match="method spec 'cam:x=1': method 'cam' has no option"):
        explain(model, images, 3, method="cam:x=1")
    assert loupe.parse_method_spec is parse_method_spec


def test_loupe_maps_records_the_spec_and_option_values(tiny_run, tmp_path, capsys):
    data = ["--dataset", "synthetic", "--synthetic-train", "2", "--synthetic-size", "32",
            "--model", str(tiny_run), "--device", "cpu", "--no-progress"]
    out = tmp_path / "maps"
    assert main(["maps", *data, "--method", "smoothgrad:n_samples=2,chunk_size=2",
                 "--option", "seed=3", "--out", str(out)]) == 0
    run = json.loads((out / "maps.json").read_text())
    assert run["method"] == "smoothgrad" and run["options"] == {"n_samples": 2, "seed": 3}
    assert main(["maps", *data, "--method", "smoothgrad:seed=1", "--option", "seed=3",
                 "--out", str(tmp_path / "clash")]) == 2
    assert capsys.readouterr().err.strip() == (
        "loupe maps: error: method spec 'smoothgrad:seed=1' and --option both set 'seed'; "
        "give each option once")
    assert main(["maps", *data, "--method", "smoothgrad:n_sample=2",
                 "--out", str(tmp_path / "typo")]) == 2
    assert "method spec 'smoothgrad:n_sample=2': method 'smoothgrad' has no option " \
        "'n_sample'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.pipeline.conftest import save_tiny_run

    return save_tiny_run(tmp_path_factory.mktemp("spec-run"))


def test_float_values_are_written_exactly():
    for value in (0.1, 1e-7, 2.5e10, -0.03):
        assert parse_value(format_value(value)) == value
    assert math.isinf(parse_value("inf"))


def test_loupe_explain_takes_a_spec_and_names_files_after_it(world, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    args = base_args(world, out, world["images"] / "a.png")
    assert main([*args, "--method", "smoothgrad:n_samples=2,seed=4", "--target", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a.smoothgrad.n_samples=2.seed=4.3.npz", "a.smoothgrad.n_samples=2.seed=4.3.png",
        "explain.json"]
    assert main([*args, "--method", "smoothgrad", "--option", "n_samples=2", "seed=4",
                 "--target", "3", "--out", str(tmp_path / "plain")]) == 0
    with_spec = np.load(out / "a.smoothgrad.n_samples=2.seed=4.3.npz")["maps"]
    with_options = np.load(tmp_path / "plain" / "a.smoothgrad.3.npz")["maps"]
    assert np.array_equal(with_spec, with_options)
