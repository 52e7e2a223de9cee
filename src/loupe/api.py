"""``explain``: one call from a classifier and a batch of images to class maps."""

from __future__ import annotations

import inspect
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from loupe.context import MapContext, Progress
from loupe.hooks import hooked
from loupe.layers import Reshape, default_reshape, find_target_layer
from loupe.masks.normalize import normalize
from loupe.method_specs import resolve_method
from loupe.registry import MethodSpec, get_method
from loupe.targets import TargetsLike, resolve_targets

__all__ = ["MapContext", "explain", "normalize"]


def explain(
    model: nn.Module,
    images: torch.Tensor,
    targets: TargetsLike = None,
    method: str = "gradcam",
    *,
    target_layer: str | None = None,
    reshape: Reshape | None = None,
    upsample: bool = True,
    autocast: bool = False,
    progress: Progress | None = None,
    **options: object,
) -> torch.Tensor:
    """Class maps of ``images`` for ``targets``, shape ``(B, K, H, W)``, float32, raw.

    Args:
        model: any classifier (or any model, with score-function targets).
        images: ``(B, C, H, W)`` preprocessed input; never modified.
        targets: see :mod:`loupe.targets`; ``None`` explains the top-1 class.
        method: a name from :func:`loupe.list_methods`, or a spec with options such as
            ``"shuffle:n_shuffles=16"`` (:mod:`loupe.method_specs`; none also in ``options``).
        target_layer: module name for layer methods (``"layer4"``); found automatically if None.
        reshape: turns the layer's output into ``(B, C, h, w)``; the default drops class
            tokens of ViTs and reshapes the rest to a square grid, and permutes the
            ``(B, h, w, C)`` stages of channels-last models (timm Swin), see
            :func:`loupe.layers.default_reshape`.
        upsample: bilinear upsampling to ``(H, W)``; False returns the method's own resolution.
        autocast: run the model under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU).
        progress: told the images done so far (a float up to ``B``) after each chunk of
            forwards of the long methods (Score-CAM, shuffle, SmoothGrad, IG), and at the end.
        options: method options (see each method's docstring).

    Returns:
        Raw maps (not normalised; see :func:`normalize`) on the images' device. Model mode,
        parameter ``requires_grad`` flags and hooks are as before the call, also on error.
    """
    _check_images(images)
    name, options = resolve_method(method, options, "the keyword arguments")
    spec = get_method(name)
    layer = _layer_of(spec, model, images, target_layer, options)
    resolved = resolve_targets(targets, images.shape[0], images.device)
    amp = _autocast_context(images.device) if autocast else nullcontext()
    # Gradients are the method's business: a caller's torch.no_grad() must not break them.
    grad = torch.enable_grad() if spec.gradients else torch.no_grad()
    with hooked(model, [layer] if layer else [], freeze=spec.gradients) as captured, amp, grad:
        context = MapContext(
            model, images.detach(), resolved, layer, captured, reshape or default_reshape(model),
            progress,
        )
        maps = spec.function(context, **options)
    if progress is not None:
        progress(float(images.shape[0]))
    maps = maps.float()
    if upsample and maps.shape[-2:] != images.shape[-2:]:
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return maps


def _layer_of(spec: MethodSpec, model: nn.Module, images: torch.Tensor,
              target_layer: str | None, options: dict[str, object]) -> str | None:
    """The layer a layer method reads (``target_layer`` or found); for other methods None,
    with ``target_layer`` passed on as an option to the methods that take one."""
    if spec.uses_layer:
        return target_layer or find_target_layer(model, images)
    if target_layer is not None:
        if "target_layer" not in inspect.signature(spec.function).parameters:
            raise ValueError(f"method {spec.name!r} does not use a target layer")
        options["target_layer"] = target_layer
    return None


def _check_images(images: object) -> None:
    """A ValueError unless ``images`` is a floating-point ``(B, C, H, W)`` tensor."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a 4D tensor (B, C, H, W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got {images.dtype}")


def _autocast_context(device: torch.device) -> torch.autocast:
    """``torch.autocast`` on ``device``: float16 on CUDA, bfloat16 elsewhere."""
    return torch.autocast(device.type, dtype=_autocast_dtype(device))


def _autocast_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16
