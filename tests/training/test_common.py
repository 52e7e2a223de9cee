"""Shared training pieces: precise BatchNorm, devices, data splits, BatchNorm freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loupe.data import SyntheticSplits, has_background, open_split
from loupe.distributed import resolve_device
from loupe.training.loop import recompute_bn_statistics, set_train_mode


def test_precise_bn_is_the_average_of_batch_statistics():
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=0.01), nn.Conv2d(3, 2, 1),
                          nn.BatchNorm2d(2))
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 5, 5, generator=g) * 3 + 1, None) for _ in range(3)]
    model.eval()
    used = recompute_bn_statistics(model, batches + batches, torch.device("cpu"), max_batches=3)
    assert used == 3
    first = model[0]
    x = torch.stack([b[0] for b in batches])  # (3, 4, 3, 5, 5)
    batch_means = x.mean((1, 3, 4))
    batch_vars = x.transpose(1, 2).flatten(2).var(-1, unbiased=True)  # (3 batches, 3 ch)
    assert torch.allclose(first.running_mean, batch_means.mean(0), atol=1e-5)
    assert torch.allclose(first.running_var, batch_vars.mean(0), atol=1e-4)
    assert first.momentum == 0.01 and model[2].momentum == 0.1
    assert not model.training
    assert recompute_bn_statistics(nn.Linear(2, 2), batches, torch.device("cpu"), 3) == 0


def test_set_train_mode_can_freeze_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    set_train_mode(model, freeze_bn=True)
    assert model.training and model[0].training and not model[1].training
    set_train_mode(model, freeze_bn=False)
    assert model[1].training


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda")


def test_splits_and_their_errors():
    splits = SyntheticSplits(n_train=6, n_val=3, size=32, seed=4)
    train = open_split("synthetic", None, "train", splits)
    val = open_split("synthetic", None, "val", splits)
    assert len(train) == 6 and len(val) == 3
    assert train.ids[0] == "synthetic-4-00000" and val.ids[0] == "synthetic-5-00000"
    with pytest.raises(ValueError, match="unknown dataset kind 'imagenet'"):
        open_split("imagenet", "x", "train")
    with pytest.raises(ValueError, match="--root is required for dataset kind 'voc'"):
        open_split("voc", None, "train")
    with pytest.raises(ValueError, match="splits train, val, test; got 'trainval'"):
        open_split("synthetic", None, "trainval", splits)
    assert has_background(["background", "cat"]) and has_background(["__background__"])
    assert not has_background(["cat", "dog"])
