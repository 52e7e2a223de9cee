"""The classifier head that CAM needs: global average (or max) pooling and one linear layer.

CAM (Zhou et al., CVPR 2016) is defined for networks whose logits are
``logits = W · GAP(A) + b``: then ``CAM_k = sum_c W_kc A_c`` and the spatial mean of
``CAM_k`` is ``logit_k - b_k``. The paper also trains global *max* pooling heads
(``logits = W · GMP(A) + b``, its GAP-versus-GMP comparison) and reads them the same way,
``CAM_k = sum_c W_kc A_c``; there ``logit_k - b_k = sum_c W_kc max_ij A_c`` (each channel at
its own peak), which is not a statistic of ``CAM_k`` itself. This module finds the head (the
final linear layer and what sits between it and the pooling) and *checks the premise on the
real forward*: the head applied to the spatial mean, or the spatial maximum, of the target
layer's activation must reproduce the logits.

Supported heads, all found automatically:

- ``GAP -> [Flatten | Dropout | Identity]* -> Linear`` (ResNet, VGG-GAP, MobileNetV2,
  EfficientNet, timm ``ClassifierHead``), and the same with ``GMP`` (``loupe train --pool
  gmp``, timm ``global_pool="max"``);
- ``GAP(ReLU(A)) -> Linear`` (DenseNet, whose forward applies ``F.relu`` to ``features``);
- ``GAP -> LayerNorm -> Flatten -> Linear`` (ConvNeXt, timm ``NormMlpClassifierHead`` without
  a hidden layer): the per-image normalisation and the LayerNorm's affine are folded into the
  map, so that the spatial mean of ``CAM_k`` is ``logit_k - (W beta + b)_k``;
- timm models through ``model.get_classifier()``; any model whose final linear layer is named
  with ``head=`` (a ``Linear`` or a 1x1 ``Conv2d``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from loupe.layers import find_module

_PREFIX = "CAM needs a global-pooling + linear head: "
POOLS = ("avg", "max")


class HeadError(ValueError):
    """A model (or target layer) without the global-pooling + linear head CAM needs."""


@dataclass(frozen=True)
class CAMHead:
    """A head ``logits = W · LN(pool(f(A))) + b`` read off a model and checked on a forward.

    name: module name of the final linear layer (``"fc"``, ``"classifier.1"``).
    weight: ``(N, C)`` its weight (a 1x1 convolution's, flattened).
    bias: ``(N,)`` its bias (zeros when it has none).
    relu: True when the head pools ``ReLU(A)`` rather than ``A`` (DenseNet).
    norm_name: module name of the LayerNorm between pooling and linear (ConvNeXt), or None.
    norm_weight, norm_bias: ``(C,)`` that LayerNorm's affine (None without one).
    norm_eps: that LayerNorm's epsilon.
    pool: ``"avg"`` (global average pooling) or ``"max"`` (global max pooling).
    """

    name: str
    weight: torch.Tensor
    bias: torch.Tensor
    relu: bool = False
    norm_name: str | None = None
    norm_weight: torch.Tensor | None = None
    norm_bias: torch.Tensor | None = None
    norm_eps: float = 1e-5
    pool: str = "avg"

    @property
    def constant(self) -> torch.Tensor:
        """``(N,)`` the part of each logit that no map position explains: ``b`` or, with a
        LayerNorm, ``W beta + b``. With average pooling the spatial mean of ``CAM_k`` is
        ``logit_k`` minus this; with max pooling ``logit_k`` minus this is
        ``sum_c W_kc max_ij A_c``."""
        if self.norm_bias is None:
            return self.bias
        return self.bias + self.weight @ self.norm_bias

    def spatial_pool(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, C)``: the spatial mean or maximum, as the head pools."""
        return features.amax((-2, -1)) if self.pool == "max" else features.mean((-2, -1))

    def pooled_features(self, activation: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` activation -> ``(B, C)`` the vector the linear layer reads."""
        features = activation.float()
        if self.relu:
            features = features.clamp(min=0)
        pooled = self.spatial_pool(features)
        if self.norm_name is not None:
            pooled = nn.functional.layer_norm(
                pooled, pooled.shape[-1:], self.norm_weight, self.norm_bias, self.norm_eps
            )
        return pooled

    def logits(self, activation: torch.Tensor, columns: torch.Tensor | None = None
               ) -> torch.Tensor:
        """``(B, N)`` logits this head gives for ``activation`` ``(B, C, h, w)``, or only the
        ``columns`` ``(M,)`` of them, ``(B, M)`` (reading M rows of the weight, not all N)."""
        weight, bias = self.weight, self.bias
        if columns is not None:
            weight, bias = weight[columns], bias[columns]
        return self.pooled_features(activation) @ weight.float().T + bias.float()


def find_cam_head(
    model: nn.Module,
    activation: torch.Tensor,
    logits: torch.Tensor,
    *,
    layer: str | None = None,
    head: str | None = None,
    classes: torch.Tensor | None = None,
) -> CAMHead:
    """The global-pooling + linear head of ``model``, checked against a real forward.

    Args:
        model: the classifier.
        activation: ``(B, C, h, w)`` the target layer's output for some images.
        logits: ``(B, N)`` the model's output for the same images.
        layer: the target layer's name, used in error messages only.
        head: name of the final linear layer; found automatically when None (timm's
            ``get_classifier()``, else the last ``nn.Linear`` with ``N`` outputs).
        classes: the classes whose maps are wanted (-1 = padding): only their logits are
            compared (the premise their maps need; reads only their rows of W). None: all.

    Returns:
        The head, with ``relu=True`` when only ``pool(ReLU(A))`` reproduces the logits and
        ``pool="max"`` when only the spatial maximum does (average pooling is tried first).

    Raises:
        HeadError: no such head, or the head applied to the spatial mean and maximum of ``A``
            and of ``ReLU(A)`` does not reproduce ``logits``. A ``LayerError`` when ``head``
            names no module.
    """
    search = head_search(model, activation, logits, layer=layer, head=head)
    found, error = _first_reproducing(search.candidates(), activation, logits,
                                      _columns(classes, logits.shape[-1]))
    if found is None:
        raise search.failure(error)
    return found


@dataclass(frozen=True)
class HeadSearch:
    """The final linear layer that one forward's logits name, and the heads to try on it.

    model, name, weight, bias: the model and its final linear layer (see :class:`CAMHead`).
    norm_name, norm: the LayerNorm just before it (None) and its weight, bias and epsilon.
    where: the target layer, as error messages name it.
    stop: the module before the linear layer (and its name) where the walk back through
        pass-through modules ended, or None: described in error messages only.
    """

    model: nn.Module
    name: str
    weight: torch.Tensor
    bias: torch.Tensor
    norm_name: str | None
    norm: tuple[torch.Tensor | None, torch.Tensor | None, float]
    where: str
    stop: tuple[str, nn.Module] | None

    def candidates(self) -> Iterator[CAMHead]:
        """The heads to try, in order, made one at a time (the first, which usually matches,
        once per search): average then max pooling, with the LayerNorm (if any) then without
        it (it may be one the forward does not use), of ``A`` then ``ReLU(A)``."""
        yield self.first_candidate
        for pool, norm, relu in self._variants()[1:]:
            yield CAMHead(self.name, self.weight, self.bias, relu, *norm, pool=pool)

    @functools.cached_property
    def first_candidate(self) -> CAMHead:
        """The first of :meth:`candidates` (average pooling of ``A``, with the LayerNorm)."""
        pool, norm, relu = self._variants()[0]
        return CAMHead(self.name, self.weight, self.bias, relu, *norm, pool=pool)

    def _variants(self) -> list[tuple[str, tuple, bool]]:
        norms = [(self.norm_name, *self.norm)]
        if self.norm_name is not None:
            norms.append((None, None, None, 1e-5))
        return [(pool, norm, relu) for pool in POOLS for norm in norms for relu in (False, True)]

    def fits(self, activation: torch.Tensor, logits: torch.Tensor) -> bool:
        """True when the linear layer maps ``activation``'s channels to ``logits``' columns (a
        search kept from an earlier forward may be used for this one)."""
        return activation.dim() == 4 and tuple(self.weight.shape) == (
            logits.shape[-1], activation.shape[1])

    def failure(self, difference: float) -> HeadError:
        """The error when no candidate reproduced the logits (``difference``: the smallest
        largest difference)."""
        model_name = type(self.model).__name__
        return HeadError(
            f"{_PREFIX}{self.name!r} applied to the spatial mean or maximum of {self.where} (or "
            f"of its ReLU) does not reproduce {model_name}'s logits (largest difference "
            f"{difference:.3g}){_between(self.stop, self.name)}. The model does not end in "
            "global average or max pooling + one linear layer at this layer; use a gradient "
            "method such as gradcam"
        )


def head_search(
    model: nn.Module,
    activation: torch.Tensor,
    logits: torch.Tensor,
    *,
    layer: str | None = None,
    head: str | None = None,
) -> HeadSearch:
    """The final linear layer of ``model`` for ``activation`` ``(B, C, h, w)`` and ``logits``
    ``(B, N)`` (see :func:`find_cam_head`), checked for shape only: the candidates it gives
    must still be checked against the logits. Raises HeadError or LayerError as
    :func:`find_cam_head` does before its check."""
    where = f"target layer {layer!r}" if layer else "the target layer"
    model_name = type(model).__name__
    if activation.dim() != 4:
        raise HeadError(
            f"{_PREFIX}{where} of {model_name} gives a {activation.dim()}D activation "
            f"{tuple(activation.shape)}, not a (B, C, h, w) map"
        )
    num_logits = logits.shape[-1]
    name = head if head is not None else _final_linear_name(model, num_logits)
    if name is None:
        raise HeadError(
            f"{_PREFIX}{model_name} has no nn.Linear with {num_logits} outputs (one per logit); "
            "name the final linear layer with head=..."
        )
    return _search_at(model, name, where, (num_logits, activation.shape[1]))


def head_guess(model: nn.Module, layer: str | None = None, head: str | None = None
               ) -> HeadSearch | None:
    """The :class:`HeadSearch` that :func:`head_search` would give if ``model``'s logits were
    as wide as its final linear layer (``head``, timm's ``get_classifier()`` or the last
    ``nn.Linear``), found from the modules alone, before any forward; None when it has no linear
    layer. Check it with :meth:`HeadSearch.fits` on a forward before use. A HeadError or
    LayerError when ``head`` names no linear layer."""
    name = head if head is not None else _final_linear_name(model, None)
    if name is None:
        return None
    return _search_at(model, name, f"target layer {layer!r}" if layer else "the target layer")


def _search_at(model: nn.Module, name: str, where: str,
               shape: tuple[int, int] | None = None) -> HeadSearch:
    """The :class:`HeadSearch` of the linear layer ``name``; with ``shape`` (logits, channels)
    that layer must map the channels to the logits first (:func:`_check_linear`)."""
    weight, bias = _linear_parameters(model, name)
    norm_name, stop = _modules_before(model, name)
    if shape is not None:
        _check_linear(weight, *shape, type(model).__name__, name, where, stop)
    # after the check the linear layer reads exactly the target layer's channels
    return HeadSearch(model, name, weight, bias, norm_name,
                      _layer_norm_parameters(model, norm_name, weight.shape[1]), where, stop)


def _between(stop: tuple[str, nn.Module] | None, name: str) -> str:
    """``"; <module> sits between the pooling and <name>"`` when the walk back from the linear
    layer stopped at a hidden layer or an activation, else ``""``."""
    if stop is None or _is_feature_extractor(stop[1]):
        return ""
    return f"; {type(stop[1]).__name__} {stop[0]!r} sits between the pooling and {name!r}"


def _check_linear(weight: torch.Tensor, num_logits: int, channels: int, model_name: str,
                  name: str, where: str, stop: tuple[str, nn.Module] | None) -> None:
    """A HeadError unless the linear layer ``name`` maps ``channels`` features to the
    ``num_logits`` logits."""
    if weight.shape[0] != num_logits:
        raise HeadError(
            f"{_PREFIX}layer {name!r} of {model_name} has {weight.shape[0]} outputs but the "
            f"model gives {num_logits} logits"
        )
    if weight.shape[1] != channels:
        raise HeadError(
            f"{_PREFIX}{model_name}'s final linear layer {name!r} reads {weight.shape[1]} "
            f"features but {where} has {channels} channels{_between(stop, name)}. Use a "
            "gradient method such as gradcam, or the layer whose pooled output feeds the "
            "linear layer"
        )


def _columns(classes: torch.Tensor | None, num_logits: int) -> torch.Tensor | None:
    """The logit columns to compare for ``classes``: its real classes (padding -1 dropped;
    repeats kept unless there are more than ``num_logits``, so no sort in the usual case), or
    None (every column) when there is no real class or no ``classes``."""
    if classes is None:
        return None
    real = classes[classes >= 0]
    if real.numel() == 0:
        return None
    return real.unique() if real.numel() > num_logits else real


def _first_reproducing(
    candidates: Iterable[CAMHead], activation: torch.Tensor, logits: torch.Tensor,
    columns: torch.Tensor | None = None,
) -> tuple[CAMHead | None, float]:
    """The first candidate head whose logits of ``activation`` match ``logits`` (or their
    ``columns``), or None and the smallest largest difference."""
    scale = allowed_difference(activation, logits)
    wanted = (logits if columns is None else logits[:, columns]).float()
    errors = []
    for candidate in candidates:
        error = float((candidate.logits(activation, columns) - wanted).abs().max())
        if error <= scale:
            return candidate, error
        errors.append(error)
    return None, min(errors)


def allowed_difference(activation: torch.Tensor, logits: torch.Tensor) -> float:
    """The largest difference from ``logits`` a head may give: 1e-3 (5e-2 in float16 or
    bfloat16) of the largest absolute logit; float32 sums over C channels agree to ~1e-6
    relative."""
    low_precision = (torch.float16, torch.bfloat16)
    relative = 5e-2 if activation.dtype in low_precision or logits.dtype in low_precision else 1e-3
    return float(torch.linalg.vector_norm(logits.float(), float("inf"))) * relative


def _final_linear_name(model: nn.Module, num_logits: int | None) -> str | None:
    """timm's ``get_classifier()`` when it is a linear layer, else the last ``nn.Linear``
    (in module order) with ``num_logits`` outputs (None: any number)."""
    # looked up on the class: a plain nn.Module's __getattr__ would raise and catch an error
    get_classifier = getattr(type(model), "get_classifier", None)
    if callable(get_classifier):
        classifier = get_classifier(model)
        if _is_linear(classifier):
            for name, module in model.named_modules():
                if module is classifier:
                    return name
    return _last_linear(model, "", num_logits)


def _last_linear(module: nn.Module, name: str, num_logits: int | None) -> str | None:
    """The name of the last ``nn.Linear`` with ``num_logits`` outputs in ``module``'s
    ``named_modules()`` order (a module comes before its children): searched from the last
    child backwards, so a classifier at the end is found without walking the backbone."""
    for child_name, child in reversed(list(module.named_children())):
        found = _last_linear(child, f"{name}.{child_name}" if name else child_name, num_logits)
        if found is not None:
            return found
    if isinstance(module, nn.Linear) and num_logits in (None, module.out_features):
        return name
    return None


def _is_linear(module: object) -> bool:
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.groups == 1
        and module.stride == (1, 1)
    )


def _linear_parameters(model: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    module = find_module(model, name)
    if not _is_linear(module):
        raise HeadError(
            f"{_PREFIX}head {name!r} of {type(model).__name__} is a {type(module).__name__}, "
            "not an nn.Linear (or 1x1 nn.Conv2d); name the final linear layer"
        )
    weight = module.weight.detach()
    weight = weight.flatten(1) if weight.dim() != 2 else weight
    bias = module.bias.detach() if module.bias is not None else weight.new_zeros(weight.shape[0])
    return weight, bias


def _passes_pooled_vector(module: nn.Module) -> bool:
    """Modules that leave a pooled ``(B, C)`` / ``(B, C, 1, 1)`` vector unchanged in eval mode
    (pooling modules are checked by the forward, since a max pool would pass here too)."""
    kind = type(module).__name__
    return isinstance(module, (nn.Identity, nn.Flatten, nn.modules.dropout._DropoutNd)) or any(
        word in kind for word in ("Pool", "Dropout", "DropPath", "Flatten", "Identity")
    )


def _modules_before(model: nn.Module, name: str
                    ) -> tuple[str | None, tuple[str, nn.Module] | None]:
    """Walk back from the linear layer through its earlier siblings (its parent's children in
    registration order) while they are pass-through modules or one LayerNorm.

    Returns the LayerNorm's name (or None) and the module that stops the walk with its name
    (or None): the pooling's producer, or a hidden layer or an activation (:func:`_between`
    tells them apart, for error messages only)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    children = [(key, module) for key, module in parent._modules.items() if module is not None]
    keys = [key for key, _ in children]
    if child not in keys:
        return None, None
    norm_name = None
    for key, module in reversed(children[: keys.index(child)]):
        full = f"{parent_name}.{key}" if parent_name else key
        if isinstance(module, nn.LayerNorm) and norm_name is None:
            norm_name = full
        elif not _passes_pooled_vector(module):
            return norm_name, (full, module)
    return norm_name, None


def _is_feature_extractor(module: nn.Module) -> bool:
    """True for a module with convolutions (the backbone, where the walk back ends normally);
    False for a hidden linear layer or an activation between the pooling and the classifier."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def _layer_norm_parameters(
    model: nn.Module, norm_name: str | None, channels: int
) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    if norm_name is None:
        return None, None, 1e-5
    norm = find_module(model, norm_name)
    assert isinstance(norm, nn.LayerNorm)
    if tuple(norm.normalized_shape) != (channels,):
        raise HeadError(
            f"{_PREFIX}LayerNorm {norm_name!r} normalises over {tuple(norm.normalized_shape)}, "
            f"not over the {channels} pooled channels"
        )
    weight = norm.weight.detach() if norm.weight is not None else None
    bias = norm.bias.detach() if norm.bias is not None else None
    return weight, bias, float(norm.eps)
