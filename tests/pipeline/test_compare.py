"""``loupe compare`` end to end on the synthetic set with a tiny seeded classifier: the ranked
table with its intervals, the numbers against ``loupe evaluate``, the dev half, the HTML page,
re-runs (reuse, added methods, other settings refused) and resume after a kill."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from loupe.cli import main
from loupe.comparison import ranked_table
from loupe.data.spec import DatasetSpec, open_spec

from .conftest import kill_when, python_executable, tree_bytes

DATA = ["--dataset", "synthetic", "--synthetic-train", "12", "--synthetic-size", "32",
        "--split-by-id", "dev", "--device", "cpu", "--no-progress"]
METHODS = ["--methods", "cam", "saliency", "--crf", "cam", "--bootstrap", "200"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def compared(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("compare") / "out"
        argv = ["compare", *DATA, *METHODS, "--model", str(tiny_run), "--out", str(out)]
        code, stdout = run_cli(argv)
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return {"out": out, "argv": argv, "stdout": stdout,
            "results": json.loads((out / "results.json").read_text())}


def test_the_ranked_table_with_intervals_against_the_reference(compared):
    results, stdout = compared["results"], compared["stdout"]
    names = ["cam", "saliency", "baseline-background", "baseline-gaussian", "cam+crf"]
    assert sorted(results["ranking"]) == sorted(names) and results["reference"] == "cam"
    best = [results["methods"][n]["best_miou"] for n in results["ranking"]]
    assert best == sorted(best, reverse=True)
    for name in names:
        m = results["methods"][name]
        assert len(m["sweep"]["miou"]) == 20 and m["best_miou"] == max(m["sweep"]["miou"])
        if name == "cam":
            assert m["vs_reference"] is None
            continue
        for d in (m["vs_reference"]["best"], m["vs_reference"]["at"]):
            assert d["n"] == 200 and d["level"] == 0.95 and d["low"] <= d["high"]
            assert d["excludes_zero"] == (d["low"] > 0 or d["high"] < 0)
        assert m["vs_reference"]["best"]["observed"] == pytest.approx(
            m["best_miou"] - results["methods"]["cam"]["best_miou"])
        assert m["vs_reference"]["at"]["threshold"] == 0.15
    table = ranked_table(results)
    assert stdout.startswith(table) and table in (compared["out"] / "compare.md").read_text()
    assert "| 1 | " + results["ranking"][0] + " | " in table and "| reference |" in table


def _evaluate(tmp_path: Path, *what: str) -> dict:
    out = tmp_path / "eval"
    assert main(["evaluate", *what, *DATA, "--bootstrap", "0", "--overlays", "0",
                 "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())["methods"]


def test_the_numbers_are_those_of_loupe_evaluate(compared, tmp_path):
    out, results = compared["out"], compared["results"]["methods"]
    evaluated = _evaluate(tmp_path, "--maps", str(out / "maps" / "cam"),
                          str(out / "maps" / "saliency"))
    for name in ("cam", "saliency"):
        assert results[name]["sweep"]["miou"] == pytest.approx(
            evaluated[name]["sweep"]["miou"], abs=1e-12)
    crf = results["cam+crf"]["sweep"]["miou"]
    for threshold in ("0.15", "0.50"):
        masks = _evaluate(tmp_path / threshold, "--masks", str(out / "crf" / "cam" /
                                                                f"t{threshold}"))
        assert crf[int(round(float(threshold) * 20))] == pytest.approx(
            masks[f"t{threshold}"]["miou"], abs=1e-12)


def test_the_dev_half_is_the_first_half_of_the_sorted_ids(compared):
    out = compared["out"]
    everything = open_spec(DatasetSpec("synthetic", synthetic_train=12, synthetic_size=32))
    dev = sorted(everything.ids)[:6]
    for folder in ("cam", "saliency", "baseline-gaussian"):
        assert sorted(p.stem for p in (out / "maps" / folder).glob("*.npz")) == dev
    settings = json.loads((out / "compare.json").read_text())
    assert settings["images"] == {"split_by_id": "dev", "count": 6, "first": dev[0],
                                  "last": dev[-1]}
    per_image = json.loads((out / "per_image.json").read_text())
    assert per_image["ids"] == dev and compared["results"]["split_by_id"] == "dev"
    assert set(per_image["methods"]) == set(compared["results"]["ranking"])
    assert all(len(m["miou"]) == 6 for m in per_image["methods"].values())


def test_the_html_page_holds_the_table_the_plot_and_the_overlays(compared):
    out, results = compared["out"], compared["results"]
    page = (out / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "miou_vs_threshold.png" in page and "overlays.png" in page
    assert page.count("<table>") == 2  # the ranked table and the disagreement table
    for name in results["ranking"]:
        assert f"<td>{name}</td>" in page
    images = results["disagreement"]["images"]
    spreads = [image["spread"] for image in images]
    assert len(images) == 6 and spreads == sorted(spreads, reverse=True)
    assert results["disagreement"]["methods"] == [n for n in results["ranking"]
                                                  if not n.startswith("baseline-")]
    for image in images:
        assert f"<td>{image['id']}</td>" in page
    assert (out / "overlays.png").stat().st_size > 1000


def _stamps(folder: Path) -> dict[str, int | bytes]:
    """Each file's modification time; the bytes of the run descriptions (maps.json,
    masks.json), which every run writes again (the same content)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.suffix == ".json"
            else p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_a_rerun_reuses_every_map_and_mask_and_gives_the_same_results(compared):
    out = compared["out"]
    files = {sub: _stamps(out / sub) for sub in ("maps", "crf")}
    before = (out / "results.json").read_bytes()
    code, stdout = run_cli(compared["argv"])
    assert code == 0 and stdout == compared["stdout"]
    assert {sub: _stamps(out / sub) for sub in ("maps", "crf")} == files
    assert (out / "results.json").read_bytes() == before


def test_a_rerun_may_add_methods_but_not_change_the_settings(compared, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(compared["out"], out)
    maps = _stamps(out / "maps")
    argv = [a if a != str(compared["out"]) else str(out) for a in compared["argv"]]
    at = argv.index("saliency") + 1
    assert main([*argv[:at], "gradcam", *argv[at:]]) == 0
    after = _stamps(out / "maps")
    assert {k: v for k, v in after.items() if not k.startswith("gradcam/")} == maps
    assert len([k for k in after if k.startswith("gradcam/")]) == 8  # 6 maps, json, lock
    assert "gradcam" in json.loads((out / "results.json").read_text())["ranking"]
    capsys.readouterr()
    assert main([*argv, "--size", "24"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"loupe compare: error: {out / 'compare.json'}: this folder holds "
                            "a run with other settings (maps: ")
    assert "'size': None" in error and "'size': 24" in error and "\n" not in error


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "cam", "--crf", "gradcam"], "--crf 'gradcam' is not among --methods"),
        (["--methods", "cam", "--reference", "gradcam"], "--reference 'gradcam' is not one of "
                                                          "the compared rows"),
        (["--methods", "cam:n=1"], "method spec 'cam:n=1': method 'cam' has no option 'n'"),
        # numbers are checked at parse time (argparse's "argument --X: ..." line)
        (["--methods", "cam", "--fixed", "0.12"], "argument --fixed: expected one of the "
                                                  "swept thresholds 0, 0.05, ..., 0.95, got "
                                                  "'0.12'"),
        (["--methods", "cam", "--common-threshold", "0.33"], "argument --common-threshold: "
                                                             "expected one of the swept "
                                                             "thresholds"),
        (["--methods", "cam", "--overlays", "-1"], "argument --overlays: expected an integer "
                                                   ">= 0, got '-1'"),
    ],
)
def test_errors_are_one_line_and_write_nothing(tiny_run, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["compare", *DATA, "--model", str(tiny_run), *extra, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"loupe compare: error: {message}") and "\n" not in error
    assert not out.exists()


RESUME = ["compare", "--dataset", "synthetic", "--synthetic-train", "16", "--synthetic-size",
          "32", "--split-by-id", "test", "--methods", "smoothgrad:n_samples=4,seed=0", "cam",
          "--scales", "1.0", "1.5", "--flip", "--batch-size", "2", "--bootstrap", "100",
          "--device", "cpu", "--no-progress"]


def _without_folders(results: dict) -> dict:
    for entry in results["methods"].values():
        entry.pop("folder")
    return results


def test_a_killed_comparison_resumes_to_the_same_files(tiny_run, tmp_path):
    killed = tmp_path / "killed"
    first = killed / "maps" / "smoothgrad.n_samples=4.seed=0"
    command = [python_executable(), "-m", "loupe", *RESUME, "--model", str(tiny_run),
               "--out", str(killed)]
    kill_when(command, lambda: len(list(first.glob("*.npz"))) >= 2)
    done = len(list(first.glob("*.npz")))
    assert 0 < done < 8 and not (killed / "results.json").exists()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocess ran with one thread: the same kernels
    try:
        assert main([*RESUME, "--model", str(tiny_run), "--out", str(killed)]) == 0
        reference = tmp_path / "reference"
        assert main([*RESUME, "--model", str(tiny_run), "--out", str(reference)]) == 0
    finally:
        torch.set_num_threads(before)
    resumed, expected = tree_bytes(killed / "maps"), tree_bytes(reference / "maps")
    assert sorted(resumed) == sorted(expected) and len(expected) == 4 * 10  # 4 rows: 8, json, lock
    assert [name for name in expected if resumed[name] != expected[name]] == []
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name]
    assert _without_folders(json.loads((killed / "results.json").read_text())) == \
        _without_folders(json.loads((reference / "results.json").read_text()))
