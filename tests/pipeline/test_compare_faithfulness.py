"""``loupe compare --faithfulness``: the faithfulness table of every compared method and
baseline, in ``OUT/faithfulness/``, equal to ``loupe faithfulness`` on the same data set half,
model and methods."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch

from loupe.cli import main

DATA = ["--dataset", "synthetic", "--synthetic-train", "8", "--synthetic-size", "32",
        "--split-by-id", "dev", "--device", "cpu", "--no-progress", "--bootstrap", "100"]


def test_compare_writes_the_faithfulness_table_of_its_rows(tiny_run: Path, tmp_path: Path):
    torch.set_num_threads(1)
    out = tmp_path / "compare"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["compare", *DATA, "--model", str(tiny_run), "--methods", "cam",
                     "--faithfulness", "--out", str(out)]) == 0
    results = json.loads((out / "faithfulness" / "results.json").read_text())
    assert results["methods"] == ["cam", "baseline-background", "baseline-gaussian"]
    ranked = json.loads((out / "per_image.json").read_text())
    assert results["ids"] == ranked["ids"] and len(results["ids"]) == 4  # the dev half
    assert (out / "faithfulness" / "faithfulness.md").read_text() in stdout.getvalue()

    alone = tmp_path / "alone"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["faithfulness", *DATA, "--model", str(tiny_run), "--methods", "cam",
                     "baseline-background", "baseline-gaussian", "--out", str(alone)]) == 0
    expected = json.loads((alone / "results.json").read_text())
    assert results["per_image"] == expected["per_image"] and results["table"] == expected["table"]
    assert (json.loads((out / "faithfulness" / "faithfulness.json").read_text())
            == json.loads((alone / "faithfulness.json").read_text()))
