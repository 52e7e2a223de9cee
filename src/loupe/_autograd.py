"""Gradients of several target scores at once, and how many rows to push through at a time."""

from __future__ import annotations

import torch

# Most rows (noisy copies, path points, shuffled copies) per forward + backward of the sampling
# methods (SmoothGrad, Integrated Gradients, shuffle saliency) on the CPU, for small inputs
# (large ones get fewer: CPU_GRADIENT_BYTES). Maps never depend on it. 16 because larger
# batches are slower per image on CPUs (resnet50 at 224, 2 threads: 8.4
# img/s forward + input-gradient at 8 or 16 rows, 6.0 at 32: the activations leave the cache).
GRADIENT_CHUNK = 16

# On CUDA the chunk comes from free memory instead (see gradient_chunk_size). Peak bytes of one
# row's forward + input-gradient backward, in multiples of the row's float32 input bytes, as
# bench/chunk_memory.py measured on torchvision models at 224x224 (parameters frozen, peak
# resident memory per extra row, CPU): 138-221 for one target (convnext_tiny 138,
# mobilenet_v2 146, efficientnet_b0 168, resnet50 186, vit_b_16 200, densenet121 221) and
# 26-43 more per further target of the batched backward. Rounded up to 256 and 64; on CUDA
# tests/test_cuda.py checks them against the allocator's peak.
ROW_BYTES_PER_INPUT_BYTE = 256
ROW_BYTES_PER_EXTRA_TARGET = 64
CUDA_MEMORY_FRACTION = 0.5  # of the memory free for this process (cudnn workspaces, others)
MAX_CUDA_CHUNK = 256  # a guard against one huge batch, not a measured optimum
# Off CUDA, at most this many bytes a chunk by the same estimate. Large inputs made the fixed
# chunk of 16 both slow and huge: shuffle on the ImageNet MobileNetV2 at 640x480, two targets,
# one thread, took 37.9 s a call at 16 rows (30.1 s of it system time, 11.6 GB resident: the
# kernel mapping and zeroing fresh pages for every chunk's activations), 9.6 s at 1 row (1.7
# GB); ResNet-50 35.5 s at 16, 21.7 s at 2 (docs/speed.md, "The CPU chunk of the gradient
# methods"). At 3x224x224 fewer rows cost ResNet-50 ~16% (6-8 rows) and made no difference
# beyond noise for MobileNetV2, so 3 GiB keeps 16 rows there for one or two targets, and gives
# 2-3 at 3x480x640.
CPU_GRADIENT_BYTES = 3 * 2**30


def gradient_chunk_size(device: torch.device, row_numel: int, targets: int = 1) -> int:
    """Rows per forward + backward for the sampling methods, from an estimate of one row's
    peak memory, ``row_numel * 4 * (256 + 64 * (targets - 1))`` bytes: on CUDA as many rows as
    fit in :data:`CUDA_MEMORY_FRACTION` of the memory available to this process
    (``torch.cuda.mem_get_info``'s free bytes plus what PyTorch's allocator holds unused),
    between 1 and :data:`MAX_CUDA_CHUNK`; elsewhere as many as fit in
    :data:`CPU_GRADIENT_BYTES`, between 1 and :data:`GRADIENT_CHUNK` (for one target: 16 up to
    3x224x224, 10 at 3x320x320, 3 at 3x480x640).

    ``row_numel`` is the element count of one input row ``(C, H, W)``; ``targets`` is K, the
    maps per image (the K backward passes run batched). Maps never depend on the result.
    """
    device = torch.device(device)
    factor = ROW_BYTES_PER_INPUT_BYTE + ROW_BYTES_PER_EXTRA_TARGET * max(targets - 1, 0)
    row_bytes = max(row_numel, 1) * 4 * factor
    if device.type != "cuda":
        return max(1, min(GRADIENT_CHUNK, CPU_GRADIENT_BYTES // row_bytes))
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    fitting = int((free + max(cached, 0)) * CUDA_MEMORY_FRACTION // row_bytes)
    return max(1, min(MAX_CUDA_CHUNK, fitting))


def grads_per_target(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``d scores[:, k] / d inputs`` for every target k, as ``(K, *inputs.shape)``.

    ``scores`` is ``(B, K)``; rows are independent (eval-mode model, each score depends on its
    own image only), so the gradient of the column sum is the per-image gradient. The K
    backward passes run as one batched (vmapped) backward; a model whose backward cannot be
    vmapped falls back to K ordinary passes over the same graph.
    """
    k = scores.shape[1]
    if k == 1:
        (grad,) = torch.autograd.grad(scores[:, 0].sum(), inputs)
        return grad[None]
    basis = torch.eye(k, dtype=scores.dtype, device=scores.device)[:, None, :]
    try:
        (grad,) = torch.autograd.grad(
            scores, inputs, basis.expand(k, *scores.shape), is_grads_batched=True,
            retain_graph=True,
        )
        return grad
    except RuntimeError:
        grads = [
            torch.autograd.grad(scores[:, j].sum(), inputs, retain_graph=j < k - 1)[0]
            for j in range(k)
        ]
        return torch.stack(grads)
