"""``loupe train`` and ``loupe train-seg`` under ``torchrun``: two real processes on the CPU
(gloo) train with DistributedDataParallel, end with identical weights, and only rank 0
writes the run folder; the same commands run in one process, and with frozen BatchNorm two
processes follow one process step for step (the global batch is kept)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from loupe.cli import main
from loupe.data.synthetic import make_synthetic
from loupe.io import load_torch
from loupe.masks.palette import save_mask_png
from loupe.metrics import mean_average_precision
from loupe.metrics.segmentation import confusion_matrix, mean_iou
from loupe.models import Preprocessing, build_classifier, load_model
from loupe.training.parallel import (
    RankShuffleSampler,
    epoch_permutation,
    per_rank_batch_size,
    train_loader,
)
from loupe.training.segmentation import predict_masks
from loupe.training.transforms import resize_and_pad

N_TRAIN, N_VAL, SIZE = 16, 5, 32  # 5 validation images: shards of 3 and 2
SYNTHETIC = ["--dataset", "synthetic", "--synthetic-train", str(N_TRAIN), "--synthetic-val",
             str(N_VAL), "--synthetic-size", str(SIZE), "--device", "cpu", "--no-progress"]
TRAIN = ["train", *SYNTHETIC, "--backbone", "small", "--pretrained", "none", "--epochs", "2",
         "--batch-size", "8", "--lr", "0.05", "--head-lr-mult", "1", "--resize-long", "28",
         "36", "--crop", "32"]
# frozen BatchNorm statistics of a random network: activations shrink layer by layer and the
# weights move little at lr 0.05 (largest change 4e-5), so the comparison runs at lr 1
FROZEN = [*TRAIN, "--freeze-bn", "--lr", "1.0"]
TRAIN_SEG = ["train-seg", *SYNTHETIC, "--backbone", "mobilenet_v3_large", "--pretrained",
             "none", "--epochs", "1", "--batch-size", "4", "--max-steps-per-epoch", "2",
             "--no-resize", "--crop", "32", "--lr", "0.05", "--bn-momentum", "0.1",
             "--precise-bn", "2"]

# Runs the CLI commands of a plan in each torchrun process. Spies on the training modules
# record, per rank, the model each epoch trained (saved afterwards as that rank's state dict),
# the per-rank batch size and sampler indices, and every call that writes the run folder.
DRIVER = textwrap.dedent("""
    import contextlib, json, os, sys
    from pathlib import Path

    import torch
    import loupe.training.loop as loop
    from loupe.cli import main
    from loupe import distributed

    plan = json.loads(Path(sys.argv[1]).read_text())
    rank = int(os.environ["RANK"])
    seen = {}

    def spy(module):
        real_epoch, real_save = module.train_epoch, module.save_run

        def train_epoch(model, batches, *args, **kwargs):
            if kwargs["description"].startswith(plan["interrupt"].get(command, "never")):
                raise KeyboardInterrupt  # on every rank, before the epoch's first step
            seen["model"] = model
            seen["wrapped"] = type(model).__name__
            seen["world"] = distributed.world_size()
            seen.setdefault("batch_sizes", []).append(batches.batch_size)
            seen.setdefault("indices", []).append(list(batches.sampler))
            return real_epoch(model, batches, *args, **kwargs)

        def save_run(*args, **kwargs):
            seen["saves"] = seen.get("saves", 0) + 1
            return real_save(*args, **kwargs)

        module.train_epoch, module.save_run = train_epoch, save_run

    spy(loop)  # the one training loop of classifier and segmentation
    # with "outer": one process group for all commands (PyTorch cannot reliably re-create a
    # destroyed group); without, the command sets up and destroys its own, as `torchrun -m loupe`
    session = distributed.distributed_session("cpu") if plan["outer"] else contextlib.nullcontext()
    with session:
        for command, argv in plan["commands"].items():
            seen.clear()
            code = main(argv)
            model = seen.pop("model")
            torch.save(model.module.state_dict() if hasattr(model, "module") else
                       model.state_dict(), Path(plan["reports"], f"{command}-rank{rank}.pt"))
            seen["code"] = code
            Path(plan["reports"], f"{command}-rank{rank}.json").write_text(json.dumps(seen))
""")


def subprocess_env() -> dict[str, str]:
    """One thread per process (the machine is shared), no GPU."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONUNBUFFERED="1")
    return env


def torchrun(tmp_path: Path, name: str, commands: dict[str, list[str]], outer: bool,
             interrupt: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """Run ``commands`` in 2 torchrun processes; per command, each rank's report (rank
    order), with its state dict under ``"state"``. ``interrupt`` maps a command to the
    progress description (``"epoch 2/"``) at which every rank raises KeyboardInterrupt."""
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed beside the interpreter")
    reports = tmp_path / f"{name}-reports"
    reports.mkdir()
    plan = tmp_path / f"{name}.json"
    plan.write_text(json.dumps({"commands": commands, "outer": outer,
                                "interrupt": interrupt or {}, "reports": str(reports)}))
    (tmp_path / "driver.py").write_text(DRIVER)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node",
         "2", str(tmp_path / "driver.py"), str(plan)],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = {}
    for command in commands:
        ranks = []
        for r in (0, 1):
            report = json.loads((reports / f"{command}-rank{r}.json").read_text())
            report["state"] = torch.load(reports / f"{command}-rank{r}.pt", weights_only=True)
            ranks.append(report)
        results[command] = ranks
    return results


def assert_same_state(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert different == []


def assert_data_parallel_run(ranks: list[dict], run: Path, epochs: int, per_rank: int,
                             steps: int) -> None:
    """Both ranks trained a DDP model on disjoint shards, hold identical weights and buffers
    equal to the written model; rank 0 alone wrote the run folder."""
    assert [r["code"] for r in ranks] == [0, 0]
    assert [r["wrapped"] for r in ranks] == ["DistributedDataParallel"] * 2
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["batch_sizes"] for r in ranks] == [[per_rank] * epochs] * 2
    assert [r.get("saves", 0) for r in ranks] == [epochs, 0]
    for epoch in range(epochs):
        zero, one = ranks[0]["indices"][epoch], ranks[1]["indices"][epoch]
        assert len(zero) == len(one) == N_TRAIN // 2 and not set(zero) & set(one)
    assert_same_state(ranks[0]["state"], ranks[1]["state"])
    assert_same_state(ranks[0]["state"], load_torch(run / "model.pt"))
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert [h["steps"] for h in history] == [steps] * epochs


def validation_map(model_dir: Path) -> float:
    """mAP of a saved classifier on the synthetic validation split, computed here."""
    model, spec = load_model(model_dir)
    val = make_synthetic(N_VAL, SIZE, seed=1)
    images = Preprocessing.from_json(spec["preprocessing"])(val.images.float() / 255)
    images = torch.stack([resize_and_pad(image, spec["input_size"]) for image in images])
    with torch.no_grad():
        scores = torch.sigmoid(model(images))
    return mean_average_precision(scores, val.labels[:, spec["label_offset"]:].float())


def test_two_processes_train_like_one(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    train = make_synthetic(N_TRAIN, SIZE, seed=0)  # the synthetic training split of seed 0
    for index in range(N_TRAIN):
        save_mask_png(masks / f"{train.ids[index]}.png", train.masks[index])
    two, one = tmp_path / "two", tmp_path / "one"
    # 1) the command on its own, as `torchrun -m loupe train ...` runs it (it sets up and
    #    destroys the process group itself); BatchNorm in training mode
    results = torchrun(tmp_path, "alone", {"train": [*TRAIN, "--out", str(two / "train")]},
                       outer=False)
    assert_data_parallel_run(results["train"], two / "train", epochs=2, per_rank=4, steps=2)
    history = json.loads((two / "train" / "history.json").read_text())
    # validation was sharded (3 + 2 images) and all-reduced: it is the full split's mAP
    assert history[-1]["val_map"] == pytest.approx(validation_map(two / "train"), abs=1e-6)

    # 2) frozen BatchNorm, train-seg, and run 1) again interrupted at the start of epoch 2
    #    then resumed, in one process group
    results = torchrun(tmp_path, "group", {
        "frozen": [*FROZEN, "--out", str(two / "frozen")],
        "seg": [*TRAIN_SEG, "--masks", str(masks), "--out", str(two / "seg")],
        "cut": [*TRAIN, "--out", str(two / "resumed")],
        "resume": [*TRAIN, "--resume", "--out", str(two / "resumed")],
    }, outer=True, interrupt={"cut": "epoch 2/"})
    assert [r["code"] for r in results["cut"]] == [130, 130]
    assert [r.get("saves", 0) for r in results["cut"]] == [1, 0]
    resumed = results["resume"]
    assert [r["code"] for r in resumed] == [0, 0]
    assert [r.get("saves", 0) for r in resumed] == [1, 0]  # epoch 2 only, by rank 0
    assert_same_state(resumed[0]["state"], resumed[1]["state"])
    # run 1) was never interrupted; measured: the resumed weights equal it bit for bit
    straight = load_torch(two / "train" / "model.pt")
    after_one = results["cut"][0]["state"]
    assert any(not torch.equal(after_one[k], straight[k]) for k in straight)  # epoch 2 counts
    for name, value in load_torch(two / "resumed" / "model.pt").items():
        assert torch.allclose(value.float(), straight[name].float(), atol=1e-6), name
    assert_data_parallel_run(results["frozen"], two / "frozen", epochs=2, per_rank=4, steps=2)
    assert_data_parallel_run(results["seg"], two / "seg", epochs=1, per_rank=2, steps=2)

    # the same commands in one process (no torchrun)
    assert main([*FROZEN, "--out", str(one / "frozen")]) == 0
    assert main([*TRAIN_SEG, "--masks", str(masks), "--out", str(one / "seg")]) == 0
    # With fixed BatchNorm statistics the loss of a batch is the mean of per-image losses, so
    # two ranks of 4 images whose gradients DDP averages take the step one process takes on
    # the same 8 images: the weights agree up to float summation order. Measured: every
    # difference is below 1e-8 and at most 5e-5 of the change training made to the same
    # tensor (changes up to 0.05); a summed instead of averaged gradient, or ranks on the
    # wrong images, would differ by about the change itself.
    alone, parallel = load_torch(one / "frozen" / "model.pt"), results["frozen"][0]["state"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the initialisation train_classifier makes for --seed 0
        initial = build_classifier("small", 5).state_dict()
    assert alone.keys() == parallel.keys() == initial.keys()
    changes = {k: float((alone[k].double() - initial[k].double()).abs().max()) for k in alone}
    assert max(changes.values()) > 1e-2  # training moved the weights
    for name, value in alone.items():
        difference = float((parallel[name].double() - value.double()).abs().max())
        assert difference <= 1e-3 * changes[name], (name, difference, changes[name])
    one_history = json.loads((one / "frozen" / "history.json").read_text())
    two_history = json.loads((two / "frozen" / "history.json").read_text())
    for a, b in zip(one_history, two_history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_map"] == pytest.approx(b["val_map"], abs=1e-6)

    # train-seg: the all-reduced confusion matrix gives the full validation split's mIoU
    model, spec = load_model(two / "seg")
    val = make_synthetic(N_VAL, SIZE, seed=1)
    images = Preprocessing.from_json(spec["preprocessing"])(val.images.float() / 255)
    ours = float(mean_iou(confusion_matrix(predict_masks(model, images), val.masks,
                                           len(spec["class_names"])).sum(0)))
    seg_history = json.loads((two / "seg" / "history.json").read_text())
    assert seg_history[-1]["val_miou"] == pytest.approx(ours, abs=1e-9)
    assert json.loads((one / "seg" / "history.json").read_text())[-1]["steps"] == 2


def test_ranks_share_out_each_global_batch() -> None:
    n, world, per_rank = 21, 2, 4  # global batch 8, 2 full steps, 5 images left over
    order = epoch_permutation(n, seed=3, epoch=1).tolist()
    shards = [list(RankShuffleSampler(n, 3, 1, rank, world, drop_last=True))
              for rank in range(world)]
    assert [len(s) for s in shards] == [10, 10] and not set(shards[0]) & set(shards[1])
    for step in range(2):
        together = sorted(i for s in shards for i in s[step * per_rank:(step + 1) * per_rank])
        assert together == sorted(order[step * 8:(step + 1) * 8])
    # without drop_last the shorter rank is padded from the start of the permutation
    padded = [list(RankShuffleSampler(5, 0, 0, rank, 2)) for rank in (0, 1)]
    start = epoch_permutation(5, 0, 0).tolist()
    assert padded == [start[0::2], start[1::2] + [start[0]]]


def test_one_process_keeps_the_order_of_a_shuffling_data_loader() -> None:
    data = list(range(11))
    g = torch.Generator().manual_seed(2 * 7919 + 3)
    plain = [b.tolist() for b in DataLoader(data, batch_size=4, shuffle=True, generator=g,
                                            drop_last=True)]
    ours = [b.tolist() for b in train_loader(data, 4, seed=2, epoch=3, workers=0,
                                             drop_last=True)]
    assert ours == plain and len(ours) == 2


def test_global_batch_must_divide_among_processes(tmp_path, capsys, monkeypatch) -> None:
    assert per_rank_batch_size(16, 4) == 4 and per_rank_batch_size(3, 1) == 3
    with pytest.raises(ValueError, match="--batch-size 6 is the global batch and must be "
                                         "divisible by the 4 torchrun processes"):
        per_rank_batch_size(6, 4)
    # under torchrun (WORLD_SIZE set) both commands refuse before joining any process group
    monkeypatch.setenv("WORLD_SIZE", "2")
    for command in (TRAIN, [*TRAIN_SEG, "--masks", str(tmp_path)]):
        at = command.index("--batch-size") + 1
        code = main([*command[:at], "3", *command[at + 1:], "--out", str(tmp_path / "run")])
        assert code == 2
        assert "--batch-size 3 is the global batch and must be divisible by the 2" in (
            capsys.readouterr().err)
    assert not torch.distributed.is_initialized()
    assert not (tmp_path / "run").exists()
