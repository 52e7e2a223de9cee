"""Guided Backpropagation and Guided Grad-CAM.

Guided Backpropagation (Springenberg et al., "Striving for Simplicity: The All Convolutional
Net", ICLR Workshop 2015) is the gradient of the target score with respect to the input in
which every ReLU passes back only positive gradients where its input was positive:
``R_l = [f_l > 0] * [R_{l+1} > 0] * R_{l+1}``. Guided Grad-CAM (Selvaraju et al., ICCV 2017,
Section 3.1) multiplies it, pixel by pixel, with the Grad-CAM map upsampled bilinearly to the
input: ``GuidedGradCAM_k = GB_k * Up(GradCAM_k)``.

Which models are supported
    ReLUs are guided through forward hooks on ``nn.ReLU`` and ``nn.ReLU6`` modules (torchvision
    ResNet, VGG, AlexNet, SqueezeNet, MobileNetV2, ...; ``inplace=True`` is fine), installed by
    :func:`loupe.hooks.guided_relus` and removed when the call ends. A ReLU applied as a
    function (``F.relu``, ``torch.relu``, ``Tensor.relu``, ``F.relu6``) cannot be hooked:
    torchvision DenseNet (the ReLU after ``features``), GoogLeNet and Inception v3 (every
    ``BasicConv2d``) do this. Such ReLUs are found in the autograd graph of each call, and the
    call raises a ValueError unless ``strict=False``, which leaves them unguided (what captum
    and pytorch-grad-cam do silently). ``clamp(min=0)`` written by hand is not detected. Other
    activations (SiLU, GELU: EfficientNet, ConvNeXt, ViT) are differentiated as usual; a model
    without any ReLU module gets its plain gradient, with a logged warning.

Maps
    Both methods return ``(B, K, H, W)`` at the input's resolution: the colour channels of the
    ``(B, K, C, H, W)`` attribution are reduced with ``reduce`` (see
    :func:`loupe.methods.gradients.reduce_channels`; ``"abs-max"`` by default, as for saliency).
    Use :func:`guided_gradients` for the per-channel attributions themselves.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from loupe._autograd import grads_per_target
from loupe.context import MapContext
from loupe.hooks import guided_relus
from loupe.methods.augment import aug_smoothable
from loupe.methods.gradcam import gradcam
from loupe.methods.gradients import _check_reduce, reduce_channels
from loupe.registry import register
from loupe.targets import Targets

logger = logging.getLogger(__name__)

INTERPOLATIONS = ("bilinear", "nearest")
_RELU_NODES = ("ReluBackward0", "ReluBackward1")


def unguided_relus(scores: torch.Tensor, guided: set[object] | frozenset = frozenset()) -> int:
    """How many ReLU (or ReLU6) operations in the autograd graph of ``scores`` are not among
    the ``guided`` nodes (see :func:`loupe.hooks.guided_relus`), i.e. were applied as
    functions, not modules.

    Walks the graph once (no backward is run). A ReLU node is ``ReluBackward`` or a
    ``HardtanhBackward`` whose lower bound is 0 (``F.relu6``, ``nn.ReLU6``)."""
    relus, seen = set(), set()
    stack = [scores.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if _is_relu_node(node):
            relus.add(node)
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return len(relus - set(guided))


def _is_relu_node(node: object) -> bool:
    name = type(node).__name__
    if name in _RELU_NODES:
        return True
    return name.startswith("HardtanhBackward") and getattr(node, "_saved_min_val", None) == 0


def guided_gradients(
    model: nn.Module, images: torch.Tensor, targets: Targets, *, strict: bool = True
) -> tuple[torch.Tensor, Targets]:
    """Guided Backpropagation attributions ``(K, B, C, H, W)`` of the K target scores of
    ``images`` ``(B, C, H, W)``, and the targets bound on this forward (top-1 filled in).

    One forward with every ReLU module guided, one batched backward for all K targets.
    Raises a ValueError when the model applies ReLUs as functions and ``strict`` is True."""
    with guided_relus(model) as guided, torch.enable_grad():
        leaf = images.detach().requires_grad_(True)
        output = model(leaf)
        bound = targets.bind(output)
        scores = bound.scores(output)
        missed = unguided_relus(scores, guided)
        if missed and strict:
            raise ValueError(
                f"guided backpropagation: {type(model).__name__} applies {missed} ReLU(s) as "
                "functions (F.relu, torch.relu, F.relu6), which module hooks cannot guide "
                "(torchvision DenseNet, GoogLeNet, Inception v3 do this); pass strict=False "
                "to leave them unguided"
            )
        if missed:
            logger.warning("guided backpropagation: %d functional ReLU(s) left unguided", missed)
        if not guided:
            logger.warning(
                "guided backpropagation: no nn.ReLU/nn.ReLU6 module of %s took part; the maps "
                "are its plain gradients", type(model).__name__,
            )
        return grads_per_target(scores, leaf).detach(), bound


def guided_gradcam_maps(
    guided: torch.Tensor,
    cams: torch.Tensor,
    *,
    interpolation: str = "bilinear",
    reduce: str = "abs-max",
) -> torch.Tensor:
    """Guided Grad-CAM maps ``(B, K, H, W)``: ``reduce_c(GB_k,c * Up(GradCAM_k))``.

    ``guided``: Guided Backpropagation attributions ``(K, B, C, H, W)`` (see
    :func:`guided_gradients`); ``cams``: Grad-CAM maps ``(B, K, h, w)`` at the layer's
    resolution, upsampled to ``(H, W)`` with ``interpolation`` (``"bilinear"``, the paper's,
    ``align_corners=False``; or ``"nearest"``, captum's default)."""
    _check_interpolation(interpolation)
    up = F.interpolate(cams.float(), size=guided.shape[-2:], mode=interpolation,
                       **({"align_corners": False} if interpolation == "bilinear" else {}))
    return reduce_channels(guided.transpose(0, 1).float() * up[:, :, None], reduce)


def _check_interpolation(interpolation: object) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}"
        )


@register(
    "guided-backprop", uses_layer=False,
    paper="Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR-W 2015",
)
def guided_backprop(
    ctx: MapContext, *, reduce: str = "abs-max", strict: bool = True
) -> torch.Tensor:
    """Guided Backpropagation: ``dS_k/dx`` with every ReLU passing back
    ``[x > 0] * max(g, 0)`` (Springenberg et al. 2015).

    Options: ``reduce`` of the colour channels (``"abs-max"``, ``"abs-sum"``, ``"l2"``,
    ``"sum"``); ``strict`` (True: a model that applies ReLUs as functions raises a ValueError,
    see the module docstring; False: those ReLUs stay unguided). Returns ``(B, K, H, W)``.
    """
    _check_reduce(reduce)
    guided, _ = guided_gradients(ctx.model, ctx.images, ctx.targets, strict=strict)
    return reduce_channels(guided, reduce).transpose(0, 1)


@register(
    "guided-gradcam", uses_layer=True,
    paper="Selvaraju et al., Grad-CAM, ICCV 2017 (Guided Grad-CAM, Section 3.1)",
)
@aug_smoothable
def guided_gradcam(
    ctx: MapContext,
    *,
    interpolation: str = "bilinear",
    reduce: str = "abs-max",
    strict: bool = True,
) -> torch.Tensor:
    """Guided Grad-CAM: ``GB_k * Up(ReLU(sum_c mean_ij(dS_k/dA_c) A_c))`` (Selvaraju et al.
    2017), Guided Backpropagation times the Grad-CAM map of the target layer, upsampled.

    Options: ``interpolation`` of the Grad-CAM map (``"bilinear"`` as in the paper, or
    ``"nearest"`` as captum's ``GuidedGradCam`` by default); ``reduce`` and ``strict`` as in
    ``guided-backprop``. Two forwards: the guided one (whole graph, targets bound on it), then
    the registered ``gradcam`` with ordinary gradients. Returns ``(B, K, H, W)``.
    """
    _check_reduce(reduce)
    _check_interpolation(interpolation)
    with ctx.captured.whole_graph():
        guided, bound = guided_gradients(ctx.model, ctx.images, ctx.targets, strict=strict)
    cams = gradcam(replace(ctx, targets=bound))
    return guided_gradcam_maps(guided, cams, interpolation=interpolation, reduce=reduce)
