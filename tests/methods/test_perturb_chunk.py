"""The default chunk of the gradient-free perturbation methods (``chunk_size=None``)."""

from __future__ import annotations

import pytest
import torch

from loupe import explain
from loupe.methods import _perturb
from loupe.methods._perturb import PERTURB_CHUNK, perturb_chunk_size
from loupe.models.networks import SmallGAPNet
from tests.conftest import CUDA

METHODS = {  # small settings; chunk_size left to its default
    "scorecam": {"target_layer": "features"},
    "iscam": {"target_layer": "features", "n_samples": 2},
    "sscam": {"target_layer": "features", "n_samples": 2},
    "occlusion": {"window": 8, "stride": 8},
    "rise": {"n_masks": 8, "cells": 2},
}


def test_cpu_default_keeps_a_chunk_of_large_inputs_small():
    assert perturb_chunk_size(None, torch.zeros(1, 3, 224, 224)) == 4
    assert perturb_chunk_size(None, torch.zeros(1, 3, 160, 160)) == 9
    assert perturb_chunk_size(None, torch.zeros(1, 3, 64, 64)) == PERTURB_CHUNK
    assert perturb_chunk_size(None, torch.zeros(1, 3, 1024, 1024)) == 1
    assert perturb_chunk_size(None, torch.zeros(1, 3, 224, 224, dtype=torch.float16)) == 9


def test_a_given_chunk_is_checked_and_kept():
    assert perturb_chunk_size(7, torch.zeros(1, 3, 224, 224)) == 7
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            perturb_chunk_size(bad, torch.zeros(1, 3, 8, 8))


@CUDA[0]
@CUDA[1]
def test_cuda_default_is_the_fixed_chunk():
    assert perturb_chunk_size(None, torch.zeros(1, 3, 224, 224, device="cuda")) == PERTURB_CHUNK


@pytest.mark.parametrize("method", list(METHODS))
def test_methods_use_the_default_chunk(method, monkeypatch):
    """Each method's default chunk is perturb_chunk_size's (here 3 rows, by shrinking the
    byte budget), and the maps equal those of the explicit chunk it stands for."""
    torch.manual_seed(0)
    model = SmallGAPNet(10, widths=(4, 8, 8, 6)).eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    row_bytes = images[0].numel() * 4 * _perturb.CPU_ACTIVATION_FACTOR
    monkeypatch.setattr(_perturb, "CPU_CHUNK_BYTES", 3 * row_bytes)
    sizes = []
    forward = model.forward

    def counting(x):
        sizes.append(x.shape[0])
        return forward(x)

    monkeypatch.setattr(model, "forward", counting)
    options = METHODS[method]
    default = explain(model, images, [[3], [5]], method=method, **options)
    assert max(sizes) == 3 and 3 in sizes[1:]
    explicit = explain(model, images, [[3], [5]], method=method, chunk_size=3, **options)
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
