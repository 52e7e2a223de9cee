"""Gradients of several target scores at once."""

from __future__ import annotations

import torch

# Rows (noisy copies, path points, shuffled copies) per forward + backward of the sampling
# methods (SmoothGrad, Integrated Gradients, shuffle saliency). Maps never depend on it. 16
# because larger batches are slower per image on CPUs (resnet50 at 224, 2 threads: 8.4 img/s
# forward + input-gradient at 8 or 16 rows, 6.0 at 32: the activations leave the cache);
# on a GPU raise it until memory or utilisation says stop.
GRADIENT_CHUNK = 16


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
