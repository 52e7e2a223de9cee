"""Model-randomisation sanity check (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity
Checks for Saliency Maps", NeurIPS 2018), cascading.

Re-initialise the model's blocks one after the other from the output down (the logits
first, then the last block, ...; each stage keeps the earlier ones randomised), recompute the
maps after each stage and compare them with the maps of the trained model by Spearman rank
correlation, ``rho = pearson(rank(M), rank(M'))``. A method whose maps survive the
randomisation of the layers that make the prediction does not explain the prediction: low is
good.

Blocks are the model's top-level children, with ``nn.Sequential`` / ``nn.ModuleList``
children opened one level (torchvision's ``features.18``, ``layer4.1``, ``fc``), ordered by
when their outputs appear in a forward pass; ``layers`` overrides them. Re-initialisation
calls each submodule's own ``reset_parameters`` (PyTorch's default initialisation, which also
resets batch-norm statistics), seeded; parameters of modules without one are randomly
permuted. It happens on a deep copy: the caller's model is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from loupe.api import explain
from loupe.hooks import hooked
from loupe.layers import Reshape, find_module, find_target_layer
from loupe.registry import get_method
from loupe.targets import TargetsLike, resolve_targets


@dataclass(frozen=True)
class Randomization:
    """layers: the blocks re-initialised, in cascade order (stage ``i`` has re-initialised
    ``layers[: i + 1]``); stages: the index of the last block of each recorded stage;
    correlations: ``(S, B, K)`` Spearman correlation of each map after each recorded stage
    with the trained model's map (NaN on padding targets)."""

    layers: tuple[str, ...]
    stages: tuple[int, ...]
    correlations: torch.Tensor


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` float64 0-based ranks of each row of ``values`` ``(N, P)``, ties given their
    average rank (as ``scipy.stats.rankdata``)."""
    values = values.contiguous()
    ordered = values.sort(-1).values
    low = torch.searchsorted(ordered, values, right=False)
    high = torch.searchsorted(ordered, values, right=True)
    return (low + high - 1).double() / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N,)`` Spearman rank correlation between the rows of ``a`` and ``b`` ``(N, P)``;
    0 where a row is constant (it shares no ordering with anything)."""
    ra, rb = average_ranks(a), average_ranks(b.to(a.device))
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    denominator = (ra.square().sum(-1) * rb.square().sum(-1)).sqrt()
    rho = (ra * rb).sum(-1) / denominator.clamp(min=1e-300)
    return rho.where(denominator > 0, torch.zeros_like(rho))


def cascade_layers(model: nn.Module, images: torch.Tensor) -> list[str]:
    """The blocks of ``model`` that hold parameters, from the output down (see the module
    docstring), found with one forward of the first image."""
    blocks = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            blocks += [f"{name}.{sub}" for sub, _ in child.named_children()]
        else:
            blocks.append(name)
    blocks = [b for b in blocks if any(True for _ in find_module(model, b).parameters())]
    try:
        with hooked(model, blocks, leaf=False) as captured, torch.no_grad():
            model(images[:1])
        order = list(captured) + [b for b in blocks if b not in captured]
    except TypeError:  # a block whose output is not a tensor: keep the registration order
        order = blocks
    if not order:
        raise ValueError(f"{type(model).__name__} has no parameters to randomise")
    return order[::-1]


def _reinitialise(module: nn.Module) -> None:
    """Reset every parameter under ``module`` with the global RNG (see the module docstring)."""
    covered: set[int] = set()
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in sub.parameters(recurse=False))
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in covered:
                order = torch.randperm(p.numel()).to(p.device)
                p.copy_(p.flatten()[order].view_as(p))


def cascading_randomization(
    model: nn.Module,
    images: torch.Tensor,
    targets: TargetsLike = None,
    *,
    method: str = "gradcam",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    absolute: bool = False,
    every_stage: bool = True,
    target_layer: str | None = None,
    reshape: Reshape | None = None,
    method_options: Mapping[str, object] | None = None,
    reference_maps: torch.Tensor | None = None,
) -> Randomization:
    """Spearman correlation between the maps of ``images`` ``(B, C, H, W)`` under the trained
    ``model`` and under copies with the top 1, 2, ... blocks re-initialised (Adebayo et al.
    2018, cascading randomisation).

    Args:
        targets: see :mod:`loupe.targets`; None = the trained model's top-1 class, kept for
            every randomised model.
        method, target_layer, reshape, method_options: how maps are made (:func:`explain`).
        layers: blocks in cascade order (output first); default :func:`cascade_layers`.
        seed: seeds the re-initialisation (same seed, same randomised weights on a device).
        absolute: compare ``|M|`` instead of ``M`` (the paper shows both).
        every_stage: False records only the last stage (everything in ``layers``
            randomised): one map computation instead of one per block.
        reference_maps: the trained model's maps ``(B, K, H, W)`` for these targets, when
            the caller already has them (saves one map computation).

    Returns:
        :class:`Randomization` with correlations ``(S, B, K)``, S = len(layers) or 1.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if get_method(method).uses_layer:
        target_layer = target_layer or find_target_layer(model, images)
    layers = _checked_layers(model, images, layers)
    bound = resolve_targets(targets, images.shape[0], images.device)
    with hooked(model, []):
        bound = bound.ensure_bound(model, images)
    given = list(bound.functions) if bound.functions is not None else bound.classes
    options = dict(method_options or {})

    def maps_of(net: nn.Module) -> torch.Tensor:
        maps = explain(net, images, given, method=method, target_layer=target_layer,
                       reshape=reshape, **options)
        return (maps.abs() if absolute else maps).flatten(2).flatten(0, 1)  # (B*K, P)

    stages = list(range(len(layers))) if every_stage else [len(layers) - 1]
    if reference_maps is None:
        reference = maps_of(model)
    else:
        reference = _given_reference(reference_maps, images, bound.count, absolute)
    correlations = _cascade(model, layers, stages, seed, reference, maps_of)
    values = correlations.view(len(stages), images.shape[0], bound.count).float()
    if bound.valid is not None:
        values = values.where(bound.valid.to(values.device), values.new_tensor(float("nan")))
    return Randomization(tuple(layers), tuple(stages), values)


def _checked_layers(model: nn.Module, images: torch.Tensor,
                    layers: Sequence[str] | None) -> list[str]:
    """``layers`` (default :func:`cascade_layers`), each checked to name a module."""
    layers = list(layers) if layers is not None else cascade_layers(model, images)
    if not layers:
        raise ValueError("layers must name at least one block to randomise")
    for name in layers:
        find_module(model, name)  # a clear error for a wrong name
    return layers


def _given_reference(reference_maps: torch.Tensor, images: torch.Tensor, count: int,
                     absolute: bool) -> torch.Tensor:
    """The caller's trained-model maps ``(B, K, H, W)`` as ``(B*K, P)`` rows, checked."""
    if reference_maps.dim() != 4 or reference_maps.shape[:2] != (images.shape[0], count):
        raise ValueError(
            f"reference_maps must be (B, K, H, W) = ({images.shape[0]}, {count}, ...), "
            f"got {tuple(reference_maps.shape)}"
        )
    reference = (reference_maps.abs() if absolute else reference_maps).flatten(2)
    return reference.flatten(0, 1).to(images.device)


def _cascade(model: nn.Module, layers: list[str], stages: list[int], seed: int,
             reference: torch.Tensor, maps_of: Callable[[nn.Module], torch.Tensor]
             ) -> torch.Tensor:
    """``(S, N)`` Spearman correlations of ``maps_of(copy)`` with ``reference`` ``(N, P)``
    after re-initialising ``layers[: s + 1]`` of a deep copy, for each ``s`` in ``stages``."""
    copied = copy.deepcopy(model)
    devices = sorted({
        p.device.index if p.device.index is not None else torch.cuda.current_device()
        for p in copied.parameters() if p.device.type == "cuda"
    })
    correlations = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for index, name in enumerate(layers):
            _reinitialise(find_module(copied, name))
            if index in stages:
                correlations.append(spearman(reference, maps_of(copied)))
    return torch.stack(correlations)
