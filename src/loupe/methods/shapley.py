"""ShapleyCAM: Grad-CAM weights corrected by a second-order (Hessian-vector) term.

Cai, "CAMs as Shapley Value-based Explainers", arXiv 2501.06261, 2025: the channel weights
are ``mean_ij(dS/dA - 1/2 H A)`` with ``H = d^2 S / dA^2`` the Hessian of the score with
respect to the target layer's activation, ``L = ReLU(sum_c w_c A_c)``. For a head that is
piecewise linear in ``A`` (ReLU layers and a linear classifier on the logit) ``H A = 0`` and
ShapleyCAM is Grad-CAM; the paper pairs it with the ReST score (:func:`rest_target`), whose
softmax term is curved.
"""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.methods.augment import aug_smoothable
from loupe.methods.projection import channel_maps
from loupe.registry import register
from loupe.targets import ScoreFunction


def rest_target(k: int) -> ScoreFunction:
    """The paper's ReST score of class ``k``, ``y_k + log softmax(y)_k`` (the logit minus the
    cross-entropy; pytorch-grad-cam's ``ClassifierOutputReST``), as a score-function target
    ``(B, N) logits -> (B,)``."""

    def score(output: torch.Tensor) -> torch.Tensor:
        return output[:, k] + output.log_softmax(1)[:, k]

    return score


def shapley_weights(ctx: MapContext, counterfactual: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation ``(B, 1, C, h, w)`` and the weights ``(B, K, C, 1, 1)``
    ``mean_ij(g - 1/2 H A)``: per target, one backward that keeps its graph (``g``) and one
    backward of ``<g, A>`` through it (``H A``), both from the target layer on."""
    if not isinstance(counterfactual, bool):
        raise ValueError(f"counterfactual must be True or False, got {counterfactual!r}")
    output = ctx.model(ctx.images)
    scores = ctx.targets.bind(output).scores(output)
    if counterfactual:
        scores = -scores
    raw = ctx.captured[ctx.layer]
    weights = []
    for k in range(scores.shape[1]):
        (grad,) = torch.autograd.grad(scores[:, k].sum(), raw, create_graph=True,
                                      retain_graph=True)
        hvp = None
        if grad.requires_grad:
            (hvp,) = torch.autograd.grad(grad, raw, grad_outputs=raw.detach(),
                                         retain_graph=k < scores.shape[1] - 1,
                                         allow_unused=True)
        corrected = grad.detach() if hvp is None else grad.detach() - 0.5 * hvp
        weights.append(ctx.reshape(corrected).float().mean((-2, -1)))
    activation = ctx.reshape(raw.detach()).float()
    return activation[:, None], torch.stack(weights, 1)[..., None, None]


@register("shapleycam", uses_layer=True,
          paper="Cai, CAMs as Shapley Value-based Explainers (ShapleyCAM), arXiv 2501.06261, "
          "2025")
@aug_smoothable
def shapleycam(ctx: MapContext, *, eigen_smooth: bool = False,
               counterfactual: bool = False) -> torch.Tensor:
    """ShapleyCAM: ``ReLU(sum_c mean_ij(dS/dA_c - 1/2 (H A)_c) * A_c)``, ``H`` the Hessian of
    the score with respect to the target layer's activation ``A``. Give ``rest_target(k)`` as
    the target for the paper's ReST score; on a logit of a piecewise-linear head it equals
    Grad-CAM. One forward, then per target a backward with graph and a double backward, both
    over the layers after the target layer only. ``(B, K, h, w)``."""
    a, weights = shapley_weights(ctx, counterfactual)
    return channel_maps(weights * a, eigen_smooth, counterfactual=counterfactual)
