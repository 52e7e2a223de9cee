"""The shared loop of the perturbation methods: score many perturbed copies of the images.

Score-CAM and its variants (copies masked by activation channels), RISE (copies masked by
random masks) and Occlusion (copies with one window replaced by a baseline) all run the model
on copies of the images and read the target scores of each copy. Copies of any images go
through the model ``chunk_size`` at a time, under ``torch.no_grad`` (on the CPU through a
frozen copy of the model where that is exact: :mod:`loupe._frozen`); one forward of a copy
serves all K targets of its image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from loupe._frozen import inference_forward
from loupe.targets import Targets

# Perturbed copies per forward of the gradient-free methods (no autograd graph is kept, so
# larger than the gradient methods' 16). Maps never depend on it.
PERTURB_CHUNK = 32
# Off CUDA, a chunk whose activations exceed glibc's largest mmap threshold (32 MiB) has
# them mapped and unmapped afresh on every forward: Score-CAM on the ImageNet MobileNetV2 at
# 224x224, one call in a fresh process, took 46.0 s with 32 copies per forward (30.6 s of it
# system time, 17 million page faults), 28.9 s with 8 and 25.1 s with 4, the same ~15 s of
# user time each (docs/speed.md, bench/scorecam_real.py). The CPU default keeps one
# chunk's input bytes times CPU_ACTIVATION_FACTOR (MobileNetV2's widest early activation is
# 8 times its input, a ResNet's 5) within CPU_CHUNK_BYTES.
CPU_CHUNK_BYTES = 32 * 2**20
CPU_ACTIVATION_FACTOR = 12


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1; a ValueError naming the option otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def perturb_chunk_size(chunk_size: object, images: torch.Tensor) -> int:
    """``chunk_size`` checked (:func:`check_positive_int`), or for None the default for
    ``images`` ``(B, C, H, W)``: :data:`PERTURB_CHUNK` on CUDA; elsewhere the most rows (1 to
    :data:`PERTURB_CHUNK`) whose input bytes times :data:`CPU_ACTIVATION_FACTOR` fit in
    :data:`CPU_CHUNK_BYTES` (4 at 3x224x224, 32 at 3x64x64)."""
    if chunk_size is not None:
        return check_positive_int("chunk_size", chunk_size)
    if images.device.type == "cuda":
        return PERTURB_CHUNK
    row_bytes = images[0].numel() * images.element_size() * CPU_ACTIVATION_FACTOR
    return max(1, min(PERTURB_CHUNK, CPU_CHUNK_BYTES // max(row_bytes, 1)))


def perturbed_scores(
    model: nn.Module,
    targets: Targets,
    owner: torch.Tensor,
    build: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int,
    *,
    softmax: bool = False,
    progress: Callable[[int, int], None] | None = None,
    repeated: bool = False,
) -> torch.Tensor:
    """``(R, K)`` float32 target scores of R perturbed copies of the images.

    Args:
        targets: bound targets of the B images.
        owner: ``(R,)`` long, the image each copy is a copy of.
        build: ``rows (r,) -> (r, C, H, W)``, the perturbed inputs of those rows (copy indices
            into ``owner``); called once per chunk, in row order.
        chunk_size: rows per forward.
        softmax: score class probabilities (softmax of the output over classes) instead of
            the raw outputs; applies to class targets only (score functions get the raw
            output).
        repeated: the call is one of an explainer block's (see
            :func:`loupe._frozen.inference_forward`).
    """
    check_positive_int("chunk_size", chunk_size)
    scores = torch.empty(owner.numel(), targets.count, device=owner.device)
    forward: Callable[[torch.Tensor], object] | None = None
    with torch.no_grad():
        for rows in torch.arange(owner.numel(), device=owner.device).split(chunk_size):
            inputs = build(rows)
            if forward is None:
                forward = inference_forward(model, inputs, owner.numel(), repeated)
            output = forward(inputs)
            if softmax and targets.functions is None:
                output = output.float().softmax(dim=1)
            scores[rows] = targets.of_rows(owner[rows]).scores(output).float()
            if progress is not None:
                progress(int(rows[-1]) + 1, owner.numel())
    return scores


def zero_padding(maps: torch.Tensor, targets: Targets) -> torch.Tensor:
    """``maps`` ``(B, K, ...)`` with the maps of padding targets (class -1) set to zero."""
    valid = targets.valid
    if valid is None:
        return maps
    shape = (*valid.shape, *([1] * (maps.dim() - 2)))
    return maps * valid.to(device=maps.device, dtype=maps.dtype).view(shape)


def seeded_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """``generator`` if given, else a CPU generator seeded with ``seed`` (so a seed gives the
    same draws on every device); a ValueError naming the option otherwise."""
    if generator is None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int (or pass generator=), got {seed!r}")
        return torch.Generator().manual_seed(seed)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator
