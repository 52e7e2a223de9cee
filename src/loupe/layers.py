"""Finding layers: by name, automatically, and turning token outputs into spatial grids."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

Reshape = Callable[[torch.Tensor], torch.Tensor]

# Names of the first norm of a transformer block: torchvision ViT, timm, HuggingFace.
TOKEN_NORMS = ("ln_1", "norm1", "layernorm_before")


class LayerError(ValueError):
    """A layer name that does not exist, or a layer loupe cannot use."""


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (``"layer4"``, ``"features.18"``), or a LayerError that
    names the closest existing layers."""
    if name:
        try:
            return model.get_submodule(name)  # the fast path: no walk over every module
        except AttributeError:
            pass
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LayerError(f"layer {name!r} does not exist in {type(model).__name__}{hint}")


def _output_shapes(
    model: nn.Module, example: torch.Tensor
) -> tuple[list[tuple[str, torch.Size]], object]:
    """(name, output shape) of every module, in the order the outputs were produced, and the
    model's own output."""
    fired: list[tuple[str, torch.Size]] = []
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                fired.append((name, output.shape))

        return hook

    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            output = model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in training.items():
            m.training = mode
    return fired, output


def _is_grid(shape: torch.Size) -> bool:
    # batch 1 as the example: per-region features (a detector's RoI pooling) do not count
    return len(shape) == 4 and shape[0] == 1 and shape[2] * shape[3] > 1


def _is_tokens(shape: torch.Size) -> bool:
    return len(shape) == 3 and shape[1] >= 4 and math.isqrt(shape[1]) ** 2 >= shape[1] - 8


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The default target layer of ``model``, found with one forward of ``example[:1]``.

    CNNs: the last module whose output is a spatial map ``(B, C, h, w)`` with ``h*w > 1``
    (``layer4`` of a ResNet, ``features`` of MobileNet/EfficientNet/ConvNeXt/DenseNet), not
    counting 4D outputs of modules nested in a token-producing module (attention internals).
    Transformers (token outputs ``(B, N, C)`` after the last spatial map): the first norm of the
    last block (``ln_1`` in torchvision ViT, ``norm1`` in timm, ``layernorm_before`` in
    HuggingFace ``transformers``), as pytorch-grad-cam advises, because after the last block
    only the class token reaches the head. timm Swin (channels-last ``(B, h, w, C)`` stages):
    its final ``norm``, read through :func:`default_reshape`. Segmentation models with a dict
    output ``{"out": ...}`` and a ``backbone`` (torchvision DeepLabV3, FCN): the backbone's last
    map (``backbone.layer4``), not the classifier's logits. Detection models (a list of dicts)
    raise a LayerError asking for the layer.
    """
    fired, output = _output_shapes(model, example)
    fired = _candidates(model, fired, output)
    in_tokens = _inside_token_modules(fired)
    last_grid = max(
        (i for i, (name, s) in enumerate(fired) if _is_grid(s) and name not in in_tokens),
        default=-1,
    )
    tokens = [
        (i, name)
        for i, (name, s) in enumerate(fired)
        if i > last_grid and _is_tokens(s) and name.rsplit(".", 1)[-1] in TOKEN_NORMS
    ]
    if tokens:
        return tokens[-1][1]
    if last_grid >= 0:
        return fired[last_grid][0]
    raise LayerError(
        f"no layer of {type(model).__name__} produces a spatial map (B, C, h, w) or a token "
        "grid (B, N, C); name one with target_layer="
    )


def _candidates(
    model: nn.Module, fired: list[tuple[str, torch.Size]], output: object
) -> list[tuple[str, torch.Size]]:
    """The fired layers a default may come from, by the kind of model ``output`` shows."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        raise LayerError(
            f"{type(model).__name__} returns a list of dicts (a detection model): name the "
            "layer with target_layer= (e.g. 'backbone.body.layer4' for torchvision's "
            "ResNet-FPN detectors)"
        )
    if isinstance(output, Mapping) and "out" in output:
        backbone = [(name, s) for name, s in fired
                    if name == "backbone" or name.startswith("backbone.")]
        return backbone or fired
    return fired


def _inside_token_modules(fired: list[tuple[str, torch.Size]]) -> set[str]:
    """Names of modules nested in a module whose output is a token sequence ``(B, N, C)``: their
    4D outputs are attention internals ``(B, heads, N, d)`` (timm's ``q_norm``/``k_norm``) or a
    hybrid ViT's stem, not the model's spatial feature map."""
    token_parents = {name for name, shape in fired if _is_tokens(shape)}
    return {
        name
        for name, _ in fired
        if any(name.startswith(parent + ".") for parent in token_parents)
    }


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """Default reshape of transformer tokens ``(B, N, C)`` to ``(B, C, h, w)``.

    The largest square number ``h*w <= N`` of tokens is taken from the end; the leading
    ``N - h*w`` tokens (class and distillation tokens) are dropped. Works for torchvision
    ``vit_b_16`` and timm ViTs/DeiTs. A 4D tensor is returned unchanged.
    """
    if tokens.dim() == 4:
        return tokens
    if tokens.dim() != 3:
        raise LayerError(f"cannot reshape a {tokens.dim()}D activation to a grid")
    b, n, c = tokens.shape
    side = math.isqrt(n)
    grid = tokens[:, n - side * side :, :]
    return grid.transpose(1, 2).reshape(b, c, side, side)


def channels_last_to_grid(activation: torch.Tensor) -> torch.Tensor:
    """Reshape of a channels-last model (timm Swin, Swin V2, MambaOut, Sequencer, whose stages
    output ``(B, h, w, C)``): 4D ``(B, h, w, C)`` -> ``(B, C, h, w)``; token sequences
    ``(B, N, C)`` (a Swin block's ``norm2``) go through :func:`tokens_to_grid`."""
    if activation.dim() == 4:
        return activation.permute(0, 3, 1, 2)
    return tokens_to_grid(activation)


def default_reshape(model: nn.Module) -> Reshape:
    """The reshape ``explain`` uses when none is given: :func:`channels_last_to_grid` for a
    model that declares channels-last features (timm's ``output_fmt == "NHWC"``), else
    :func:`tokens_to_grid`. (A convolution inside such a model, e.g. Swin's
    ``patch_embed.proj``, outputs ``(B, C, h, w)``: pass ``reshape=tokens_to_grid`` for it.)"""
    if str(getattr(model, "output_fmt", "")) in ("NHWC", "Format.NHWC"):
        return channels_last_to_grid
    return tokens_to_grid
