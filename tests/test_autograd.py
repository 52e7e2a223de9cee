"""How many rows the sampling methods push through the model at a time
(``loupe._autograd.gradient_chunk_size``): the CPU default, the CUDA rule from free memory
(with ``torch.cuda.mem_get_info`` mocked), and that the methods use it when no chunk size is
given without their maps depending on it."""

from __future__ import annotations

import pytest
import torch

import loupe.methods.gradients as gradients
import loupe.methods.shuffle as shuffle
import loupe.methods.smooth_gradcampp as smooth_gradcampp
from loupe import _autograd, explain
from loupe._autograd import (
    CPU_GRADIENT_BYTES,
    GRADIENT_CHUNK,
    MAX_CUDA_CHUNK,
    gradient_chunk_size,
)
from tests.test_registry import tiny_resnet

GIB = 2**30
ROW = 3 * 224 * 224  # one 224x224 RGB row: 150528 elements, 602112 float32 bytes


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA device with ``free`` bytes free and ``reserved - allocated`` bytes cached."""
    state = {"free": 10 * GIB, "reserved": 0, "allocated": 0, "devices": []}

    def mem_get_info(device=None):
        state["devices"].append(torch.device(device))
        return state["free"], 141 * GIB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: state["reserved"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    return state


def test_off_cuda_the_measured_cpu_default(monkeypatch):
    def no_cuda(device=None):
        raise AssertionError("mem_get_info must not be asked off CUDA")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_cuda)
    assert GRADIENT_CHUNK == 16 and CPU_GRADIENT_BYTES == 3 * 2**30
    cpu = torch.device("cpu")
    for numel in (1, 3 * 64 * 64, ROW):  # up to 3x224x224: the fixed 16
        assert gradient_chunk_size(cpu, numel) == GRADIENT_CHUNK
    # 3x224x224, K = 3: 602112 bytes x 384 = 221 MiB a row; 3 GiB holds 13.9 rows
    assert gradient_chunk_size(cpu, ROW, targets=3) == 13
    assert gradient_chunk_size("meta", ROW, targets=3) == 13
    assert gradient_chunk_size(cpu, 3 * 320 * 320) == 10  # 300 MiB a row
    assert gradient_chunk_size(cpu, 3 * 480 * 640, targets=2) == 2  # 1.1 GiB a row
    assert gradient_chunk_size(cpu, 3 * 4000 * 3000) == 1  # 34 GiB a row: never 0


def test_cuda_rows_that_fit_in_half_the_free_memory(fake_cuda):
    # K = 1: 602112 bytes x 256 = 154140672 bytes a row; half of 10 GiB holds 34.8 rows
    assert gradient_chunk_size(torch.device("cuda", 1), ROW) == 34
    assert fake_cuda["devices"] == [torch.device("cuda", 1)]
    # K = 3: x (256 + 2 x 64) = 384: 231211008 bytes a row, 23.2 rows
    assert gradient_chunk_size(torch.device("cuda"), ROW, targets=3) == 23
    # memory PyTorch's allocator holds unused counts as free: 10 + (3 - 1) GiB, 41.8 rows
    fake_cuda.update(reserved=3 * GIB, allocated=GIB)
    assert gradient_chunk_size(torch.device("cuda"), ROW) == 41
    # four times the pixels, a quarter of the rows (1/4 of 41.8)
    assert gradient_chunk_size(torch.device("cuda"), 4 * ROW) == 10


def test_cuda_chunk_is_at_least_one_and_capped(fake_cuda):
    fake_cuda["free"] = 100 * 2**20  # 100 MiB: not even one 2x upsampled row fits
    assert gradient_chunk_size(torch.device("cuda"), 4 * ROW) == 1
    fake_cuda["free"] = 0
    assert gradient_chunk_size(torch.device("cuda"), ROW, targets=20) == 1
    fake_cuda["free"] = 140 * GIB  # an empty H200 and small rows: the guard
    assert gradient_chunk_size(torch.device("cuda"), 3 * 32 * 32) == MAX_CUDA_CHUNK == 256
    assert gradient_chunk_size(torch.device("cuda"), ROW) == 256  # 487 rows fit
    fake_cuda["free"] = 50 * GIB
    assert gradient_chunk_size(torch.device("cuda"), ROW) == 174  # 25 GiB / 147 MiB


SAMPLING = {
    "smoothgrad": (gradients, {"n_samples": 5}),
    "integrated-gradients": (gradients, {"steps": 5}),
    "shuffle": (shuffle, {"n_shuffles": 4}),
    "smoothgradcam++": (smooth_gradcampp, {"n_samples": 3, "stdev": 0.5}),
}


@pytest.mark.parametrize("method", sorted(SAMPLING))
def test_sampling_methods_ask_for_it_and_maps_do_not_depend_on_it(method, monkeypatch):
    module, options = SAMPLING[method]
    model = tiny_resnet()
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    targets = [[3, 7], [5, 1], [0, 9]]
    asked = []

    def spy(device, row_numel, targets=1):
        asked.append((torch.device(device), row_numel, targets))
        return 2

    monkeypatch.setattr(module, "gradient_chunk_size", spy)
    chosen = explain(model, images, targets, method=method, **options)
    assert asked == [(torch.device("cpu"), 3 * 16 * 16, 2)]
    for chunk_size in (2, 7, GRADIENT_CHUNK):
        given = explain(model, images, targets, method=method, chunk_size=chunk_size, **options)
        torch.testing.assert_close(given, chosen, rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    assert module.gradient_chunk_size is _autograd.gradient_chunk_size
