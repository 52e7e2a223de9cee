"""Progress inside long methods: ``explain(..., progress=callback)`` is told how many images
are done after every chunk of forwards, so that a caller (the CLI's progress bar) can show
images per second while one batch of Score-CAM runs for minutes. The library prints nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loupe import explain


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


# (method, options, chunks of forwards the options imply for 3 images)
LONG = [
    ("scorecam", {"chunk_size": 4}, None),  # live channels only: counted below
    ("shuffle", {"n_shuffles": 5, "chunk_size": 3, "seed": 0}, 3 * 6 // 3),
    ("smoothgrad", {"n_samples": 4, "chunk_size": 2}, 3 * 4 // 2),
    ("integrated-gradients", {"steps": 5, "chunk_size": 5}, 3),
]


@pytest.mark.parametrize(("method", "options", "chunks"), LONG)
def test_long_methods_report_progress_per_chunk(method, options, chunks) -> None:
    model = tiny_model()
    images = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    calls: list[float] = []
    maps = explain(model, images, [[0, 2]] * 3, method=method, progress=calls.append, **options)
    plain = explain(model, images, [[0, 2]] * 3, method=method, **options)
    torch.testing.assert_close(maps, plain)  # reporting changes nothing
    if chunks is None:  # Score-CAM: one call per chunk of the live channels' masked inputs
        live = int((model[:4](images).flatten(2) != 0).any(2).sum())
        chunks = -(-live // options["chunk_size"])
    assert len(calls) == chunks + 1  # every chunk, and once more when the maps are done
    assert calls == sorted(calls) and 0 < calls[0] < 3 and calls[-1] == 3.0
    assert calls[-2] == pytest.approx(3.0)  # the last chunk finishes the batch


def test_every_method_reports_once_when_done() -> None:
    calls: list[float] = []
    explain(tiny_model(), torch.randn(2, 3, 12, 12), 1, method="gradcam", progress=calls.append)
    assert calls == [2.0]
