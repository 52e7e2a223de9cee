"""Distributed runs: the helpers in one process, and two real ``torchrun`` processes on the
CPU (gloo) whose sharded maps equal a single process's byte for byte and whose all-reduced
evaluation equals a single process's exactly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from loupe import distributed
from loupe.cli import main

from .conftest import subprocess_env, tree_bytes

IMAGES = 7  # odd, with batch size 2: 4 chunks dealt 2 and 2, the last one short
MAPS = ["maps", "--dataset", "synthetic", "--synthetic-train", str(IMAGES),
        "--synthetic-size", "32", "--batch-size", "2", "--scales", "1.0", "0.5", "--flip",
        "--device", "cpu", "--no-progress"]
EVALUATE = ["evaluate", "--dataset", "synthetic", "--synthetic-train", str(IMAGES),
            "--synthetic-size", "32", "--bootstrap", "100", "--overlays", "0", "--device", "cpu",
            "--no-progress"]

DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import torch
    from loupe.cli import main
    from loupe import distributed

    plan = json.loads(Path(sys.argv[1]).read_text())
    # One process group for the whole script: the commands join it and leave it standing.
    with distributed.distributed_session("cpu"):
        codes = [main(plan["maps"]), main(plan["evaluate"])]
        rank = distributed.rank()
        report = {
            "codes": codes, "rank": rank, "world": distributed.world_size(),
            "main": distributed.is_main(), "shard": distributed.shard(list(range(7))),
            "sum": distributed.all_reduce_sum(torch.tensor([rank + 1, 10])).tolist(),
            "gathered": distributed.gather_objects(rank),
        }
    Path(plan["reports"], f"rank{rank}.json").write_text(json.dumps(report))
""")


def test_helpers_without_a_process_group(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed("cpu") == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    values = torch.tensor([1, 2])
    assert distributed.all_reduce_sum(values) is values and values.tolist() == [1, 2]
    assert distributed.gather_objects("x") == ["x"]
    distributed.barrier()
    distributed.destroy_distributed()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="launch with torchrun"):
        distributed.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.init_distributed("cpu")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process (OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(before)


def test_two_torchrun_processes_match_one_process(tiny_run: Path, tmp_path: Path, one_thread
                                                  ) -> None:
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed beside the interpreter")
    shared, single = tmp_path / "two", tmp_path / "one"
    reports = tmp_path / "reports"
    reports.mkdir()
    plan = {
        "maps": [*MAPS, "--model", str(tiny_run), "--out", str(shared / "maps")],
        "evaluate": [*EVALUATE, "--maps", str(shared / "maps"), "--out", str(shared / "run")],
        "reports": str(reports),
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "driver.py").write_text(DRIVER)
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "driver.py"),
         str(tmp_path / "plan.json")],
        env=subprocess_env(), capture_output=True, text=True, timeout=540,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[:6000]

    ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["codes"] for r in ranks] == [[0, 0], [0, 0]]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["main"] for r in ranks] == [True, False]
    assert [r["shard"] for r in ranks] == [[0, 2, 4, 6], [1, 3, 5]]
    assert [r["sum"] for r in ranks] == [[3, 20], [3, 20]]
    assert [r["gathered"] for r in ranks] == [[0, 1], None]
    # chunks of 2 dealt to ranks: rank 0 gets images 0-1 and 4-5, rank 1 images 2-3 and 6
    written = re.findall(r"maps: (\d) written, 0 already in \S+ \(rank (\d) of 2\)", done.stdout)
    assert sorted(written) == [("3", "1"), ("4", "0")], done.stdout

    assert main([*MAPS, "--model", str(tiny_run), "--out", str(single / "maps")]) == 0
    assert main([*EVALUATE, "--maps", str(single / "maps"), "--out", str(single / "run")]) == 0
    sharded, alone = tree_bytes(shared / "maps"), tree_bytes(single / "maps")
    assert len(alone) == IMAGES + 2 and sorted(sharded) == sorted(alone)  # + .maps.json.lock
    assert [n for n in alone if sharded[n] != alone[n]] == []

    two = json.loads((shared / "run" / "results.json").read_text())
    one = json.loads((single / "run" / "results.json").read_text())
    assert two["methods"]["maps"]["confusion"] == one["methods"]["maps"]["confusion"]
    assert two["methods"]["maps"]["sweep"] == one["methods"]["maps"]["sweep"]
    assert two["methods"]["maps"].pop("folder") != one["methods"]["maps"].pop("folder")
    assert two == one  # everything else, bootstrap intervals over gathered images included
    assert (shared / "run" / "report.md").read_text() == (single / "run" / "report.md"
                                                          ).read_text()
