"""``explain``: one call from a classifier and a batch of images to class maps."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from loupe.context import MapContext, Progress
from loupe.hooks import Captured, hooked
from loupe.layers import Reshape, default_reshape, find_target_layer
from loupe.masks.normalize import normalize
from loupe.method_specs import resolve_method
from loupe.registry import MethodSpec, get_method
from loupe.targets import Targets, TargetsLike, resolve_targets

__all__ = ["ExplainBatch", "MapContext", "explain", "explainer", "normalize"]


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

    Every call sets up the hook, the model's modes and the method's checks; for many batches
    of one method on one model, :func:`explainer` does that once and returns the same maps.
    """
    _check_images(images)
    name, options = resolve_method(method, options, "the keyword arguments")
    spec = get_method(name)
    layer = _layer_of(spec, model, images, target_layer, options)
    resolved = resolve_targets(targets, images.shape[0], images.device)
    with _hooked_for(model, spec, layer) as captured:
        run = _Run(model, spec, options, layer, captured, reshape or default_reshape(model),
                   autocast, upsample, {})
        return _maps_of(run, images, resolved, progress)


#: ``explain_batch(images, targets=None, *, progress=None) -> maps``: the calls of an explainer.
ExplainBatch = Callable[..., torch.Tensor]


@contextmanager
def explainer(
    model: nn.Module,
    method: str = "gradcam",
    *,
    target_layer: str | None = None,
    reshape: Reshape | None = None,
    upsample: bool = True,
    autocast: bool = False,
    **options: object,
) -> Iterator[ExplainBatch]:
    """One method on one model for many batches: the set-up that :func:`explain` makes on
    every call is made once for the block.

    ``with loupe.explainer(model, "cam", target_layer="layer4") as explain_batch:`` then
    ``maps = explain_batch(images, targets)`` for each batch (``progress=`` as in ``explain``).
    Each call returns what ``explain(model, images, targets, method, ...)`` with the same
    arguments returns (CAM and its one-forward kin to float rounding: on the CPU a block runs
    that forward through a frozen copy, :mod:`loupe._frozen_layer`). The method spec and
    options are checked when the block starts; the layer's hook goes on the model, put in
    eval mode (for gradient methods, parameters frozen), when the block starts if
    ``target_layer`` is given or the method uses none, else on the first call (the layer is
    found from its images, then kept); a ``prepare`` step (CAM: the head) runs then.
    Everything is undone when the block ends, also on error; a call after that raises a
    RuntimeError. Inside the block the model carries the hook and modes: use it for nothing
    else there. The peers' extractors (torchcam's ``CAM(model, ...)``, pytorch-grad-cam's
    ``GradCAM(model, ...)``) are the same pattern; ``bench/speed.py`` times both alike.
    """
    name, options = resolve_method(method, options, "the keyword arguments")
    spec = get_method(name)
    runs: list[_Run] = []  # the block's one run, made when the layer is known
    with ExitStack() as stack:

        def start(images: torch.Tensor | None) -> _Run:
            layer = _layer_of(spec, model, images, target_layer, options)
            captured = stack.enter_context(_hooked_for(model, spec, layer))
            memo: dict[object, object] = {}
            if spec.prepare is not None:
                spec.prepare(model, layer, options, memo)
            runs.append(_Run(model, spec, options, layer, captured,
                             reshape or default_reshape(model), autocast, upsample, memo,
                             repeated=True))
            return runs[0]

        def explain_batch(images: torch.Tensor, targets: TargetsLike = None, *,
                          progress: Progress | None = None) -> torch.Tensor:
            if stack_closed:
                raise RuntimeError(f"this explainer of {name!r} was used after its with block "
                                   "ended; call it inside the block")
            _check_images(images)
            run = runs[0] if runs else start(images)
            resolved = resolve_targets(targets, images.shape[0], images.device)
            return _maps_of(run, images, resolved, progress)

        stack_closed = False
        if target_layer or not spec.uses_layer:
            start(None)
        try:
            yield explain_batch
        finally:
            stack_closed = True


@dataclass(frozen=True)
class _Run:
    """What the calls of one ``explain`` or one :func:`loupe.explainer` block share: the
    prepared model, the method and its options, the layer and what its hook captures, the
    reshape, the autocast and upsample flags, the method's memo, and whether the calls are
    an explainer block's (``repeated``)."""

    model: nn.Module
    spec: MethodSpec
    options: dict[str, object]
    layer: str | None
    captured: Captured
    reshape: Reshape
    autocast: bool
    upsample: bool
    memo: dict[object, object]
    repeated: bool = False


def _hooked_for(model: nn.Module, spec: MethodSpec, layer: str | None
                ) -> AbstractContextManager[Captured]:
    """The hook context of one ``explain`` call or explainer block: ``layer`` (if any)
    captured, the model in eval mode and, for methods with gradients, its parameters frozen."""
    return hooked(model, [layer] if layer else [], freeze=spec.gradients)


def _maps_of(run: _Run, images: torch.Tensor, targets: Targets,
             progress: Progress | None) -> torch.Tensor:
    """The maps ``(B, K, H, W)`` (or the method's resolution) of one batch, inside the hook
    context: the method under autocast if asked and with gradients as it needs them."""
    amp = _autocast_context(images.device) if run.autocast else nullcontext()
    # Gradients are the method's business: a caller's torch.no_grad() must not break them.
    grad = torch.enable_grad() if run.spec.gradients else torch.no_grad()
    with amp, grad:
        # detached for methods with gradients (their graph starts here); the others record none
        source = images.detach() if run.spec.gradients else images
        context = MapContext(run.model, source, targets, run.layer, run.captured,
                             run.reshape, progress, run.memo, run.repeated)
        maps = run.spec.function(context, **run.options)
    if progress is not None:
        progress(float(images.shape[0]))
    maps = maps.float()
    if run.upsample and maps.shape[-2:] != images.shape[-2:]:
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return maps


def _layer_of(spec: MethodSpec, model: nn.Module, images: torch.Tensor | None,
              target_layer: str | None, options: dict[str, object]) -> str | None:
    """The layer a layer method reads (``target_layer`` or found from ``images``, which may be
    None only when ``target_layer`` is given); for other methods None, with ``target_layer``
    passed on as an option to the methods that take one."""
    if spec.uses_layer:
        if target_layer or images is None:
            return target_layer
        return find_target_layer(model, images)
    if target_layer is not None:
        if "target_layer" not in inspect.signature(spec.function).parameters:
            raise ValueError(f"method {spec.name!r} does not use a target layer")
        options["target_layer"] = target_layer
    return None


def _check_images(images: object) -> None:
    """A ValueError unless ``images`` is a floating-point ``(B, C, H, W)`` tensor, B >= 1."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a 4D tensor (B, C, H, W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got a batch of 0")


def _autocast_context(device: torch.device) -> torch.autocast:
    """``torch.autocast`` on ``device``: float16 on CUDA, bfloat16 elsewhere."""
    return torch.autocast(device.type, dtype=_autocast_dtype(device))


def _autocast_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16
