"""bench/gpu_check.sh and bench/gpu_check.py where CI runs: without CUDA one line and exit 0,
nothing run; the pieces of the report that need no GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loupe.cli import main as loupe_main
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402


def test_without_cuda_one_line_exit_0_nothing_run(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, OUT=str(tmp_path),
               LOUPE_GPU_BUNDLE=str(tmp_path / "no-bundle"))
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"gpu-check: no CUDA device visible to {sys.executable}; nothing run"]
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_without_torch_it_fails_loudly(tmp_path):
    env = dict(os.environ, PYTHON=str(tmp_path / "no-python"))
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "step setup FAILED" in done.stderr and "cannot import torch" in done.stderr


def test_the_python_side_also_refuses_to_run_without_cuda(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "report")]) == 0
    assert capsys.readouterr().out == "gpu-check: no CUDA device visible to this Python; " \
        "nothing run\n"
    assert not (tmp_path / "report").exists()


def test_maps_rate_reads_the_line_loupe_maps_logs(tmp_path, caplog):
    args = ["maps", "--dataset", "synthetic", "--synthetic-train", "2", "--synthetic-size", "32",
            "--model", "resnet18", "--weights", "random", "--label-offset", "0",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "maps")]
    with caplog.at_level("INFO"):
        assert loupe_main(args) == 0
    images, rate = gpu_check.maps_rate(caplog.text, "tiny")
    assert images == 2 and rate > 0
    with pytest.raises(gpu_check.StepFailed, match="no 'images/s' line .*tiny"):
        gpu_check.maps_rate("maps: 2 written", "tiny")


def test_junit_counts_problems_and_record_tables(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="40">'
        '<testcase classname="tests.test_cuda" name="test_a[gradcam-float16]" time="0.1"/>'
        '<testcase classname="tests.test_cuda" name="test_b" time="0.1">'
        '<failure message="assert (0.99 &gt;= 0.999)&#10;more">trace</failure></testcase>'
        '<testcase classname="tests.test_registry" name="test_c[cuda]" time="0">'
        '<skipped type="pytest.skip" message="no CUDA device">skip</skipped></testcase>'
        '</testsuite></testsuites>')
    assert gpu_check.junit_counts(junit) == {"tests": 40, "failures": 1, "errors": 0,
                                             "skipped": 1}
    assert gpu_check.junit_problems(junit) == [
        "FAILURE tests.test_cuda::test_b: assert (0.99 >= 0.999)",
        "SKIPPED tests.test_registry::test_c[cuda]: no CUDA device"]
    assert gpu_check.junit_problems(junit, most=1)[1] == "... and 1 more"
    record = tmp_path / "record.jsonl"
    record.write_text(json.dumps({"check": "autocast", "method": "gradcam", "dtype": "float16",
                                  "correlation": 0.9999951, "agreement": 0.99904,
                                  "bound": [0.999, 0.995]}) + "\n"
                      + json.dumps({"check": "chunk", "rows": 37}) + "\n")
    text = "\n".join(gpu_check.record_tables(record))
    assert "| gradcam | float16 | 0.999995 (>= 0.999) | 99.90% (>= 99.5%) |" in text
    assert '- {"check": "chunk", "rows": 37}' in text


def test_same_results_ignores_the_folder_and_names_a_difference(tmp_path):
    def write(folder: Path, miou: float) -> Path:
        folder.mkdir()
        results = {"methods": {"maps": {"folder": str(folder), "best": miou}}, "images": 7}
        (folder / "results.json").write_text(json.dumps(results))
        return folder

    a, b, c = write(tmp_path / "a", 0.5), write(tmp_path / "b", 0.5), write(tmp_path / "c", 0.6)
    gpu_check.same_results(a, b, "a and b")
    with pytest.raises(gpu_check.StepFailed, match="differ between a and c"):
        gpu_check.same_results(a, c, "a and c")


def test_memory_windows_nest(monkeypatch):
    used = {"bytes": 1000 * 2**20}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda i: (80 * 2**30 - used["bytes"], 80 * 2**30))
    sampler = gpu_check.MemorySampler(interval_s=3600)  # samples only when told
    try:
        with sampler.window() as step:
            with sampler.window() as first:
                used["bytes"] += 300 * 2**20
                sampler._update(sampler.used())
                used["bytes"] -= 300 * 2**20
            with sampler.window() as second:
                used["bytes"] += 100 * 2**20
    finally:
        sampler.close()
    assert (first["peak_mib"], second["peak_mib"], step["peak_mib"]) == (300, 100, 300)
