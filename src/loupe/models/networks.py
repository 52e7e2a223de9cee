"""loupe's own networks and the builders training uses.

- :func:`build_classifier`: a multi-label classifier. For ResNets IRN's model (Ahn et al.,
  "Weakly Supervised Learning of Instance Segmentation with Inter-pixel Relations", CVPR 2019):
  the last stage with stride 1 (output stride 16), global average pooling and a bias-free
  linear classifier, IRN's bias-free 1x1 convolution on the pooled features written as an
  ``nn.Linear`` so that loupe's ``cam`` finds it (:mod:`loupe.methods.heads`) and CAM is exact:
  ``mean_ij CAM_k = logit_k``. Other torchvision backbones keep their own head with a new final
  ``nn.Linear``; ``"small"`` is :class:`SmallGAPNet`, a small VGG-style GAP network for CPU
  demos and tests; ``"timm:<name>"`` uses timm (extra ``timm``). ``pool="gmp"`` replaces
  the global average pooling with global max pooling (:mod:`loupe.models.pooling`).
- :func:`build_segmenter`: torchvision's DeepLabV3 (Chen et al., "Rethinking Atrous
  Convolution for Semantic Image Segmentation", arXiv 1706.05587) with a ResNet-50 or
  MobileNetV3-Large backbone.

Both can start from a local ImageNet state dict (``init``), checked to fit.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from loupe.models.pooling import POOLS, with_global_pooling
from loupe.models.weights import read_state_dict

OFFLINE_MESSAGE = "ImageNet weights not available offline; use --init PATH or --pretrained none"
RESNETS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
    "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
)
SMALL_WIDTHS = (16, 32, 64, 128)
# name -> (max poolings: output stride 8 or 4, last stages with 1x1 convolutions). Receptive
# fields 68, 48, 32 and 16 pixels (docs/synthetic-data.md, rounds 3 and 6).
SMALL_BACKBONES = {"small": (3, 0), "small-s4": (2, 0), "small-s4-local": (2, 1),
                   "small-s4-local2": (2, 2)}


class SmallGAPNet(nn.Module):
    """A small VGG-style classifier ending in GAP + a bias-free linear layer (CAM-exact).

    Four stages of two 3x3 conv-BN-ReLU, 2x2 max pooling before the first ``pools`` stages
    after the first (``pools=3``: output stride 8, ``2``: output stride 4); the last
    ``pointwise`` stages use 1x1 convolutions instead, which bounds the receptive field:
    ``(B, 3, H, W) -> features (B, widths[-1], H/s, W/s) -> logits (B, num_classes)``."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = SMALL_WIDTHS,
                 pools: int = 3, pointwise: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i, width in enumerate(widths):
            if 0 < i <= pools:
                layers.append(nn.MaxPool2d(2))
            kernel = 1 if i >= len(widths) - pointwise else 3
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def _final_linear(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return names[-1]


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def classifier_head(model: nn.Module) -> str:
    """Module name of the classifier's final linear layer (the 10x learning-rate group)."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        for name, module in model.named_modules():
            if module is head:
                return name
    return _final_linear(model)


def _torchvision_model(backbone: str, pretrained: str) -> nn.Module:
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown backbone {backbone!r}: not a torchvision classification "
                         "model (see torchvision.models.list_models()); timm models: timm:NAME; "
                         f"loupe's small CPU nets: {', '.join(SMALL_BACKBONES)}")
    if pretrained == "none":
        return torchvision.models.get_model(backbone, weights=None)
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    try:
        return torchvision.models.get_model(backbone, weights=weights)
    except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
        raise ValueError(f"{OFFLINE_MESSAGE} ({backbone} {weights}: {error})") from error


def _timm_model(name: str, num_classes: int, pretrained: str, pool: str) -> nn.Module:
    try:
        import timm
    except ImportError as error:
        raise ValueError(f"backbone timm:{name} needs timm: pip install 'loupe[timm]'") from error
    if not timm.is_model(name):
        raise ValueError(f"unknown backbone timm:{name}: not a timm model (timm.list_models())")
    options = {"global_pool": "max"} if pool == "gmp" else {}
    try:
        return timm.create_model(name, pretrained=pretrained != "none",
                                 num_classes=num_classes, **options)
    except TypeError as error:  # a model without the global_pool argument
        raise ValueError(f"--pool gmp: timm:{name} takes no global_pool ({error})") from error
    except (OSError, RuntimeError) as error:
        raise ValueError(f"{OFFLINE_MESSAGE} (timm {name}: {error})") from error


def build_classifier(
    backbone: str, num_classes: int, *, head: str = "auto", output_stride: int = 16,
    pretrained: str = "none", init: str | None = None, pool: str = "gap",
) -> nn.Module:
    """A multi-label classifier with ``num_classes`` outputs.

    Args:
        backbone: a torchvision classification model name (``"resnet50"``), ``"small"``
            (:class:`SmallGAPNet`, output stride 8), ``"small-s4"`` (the same with output
            stride 4), ``"small-s4-local"`` / ``"small-s4-local2"`` (stride 4 with the last
            one / two stages 1x1: receptive field 32 / 16 pixels), or ``"timm:<name>"``.
        head: ``"irn"`` (ResNets: last stage stride 1 when ``output_stride=16``, GAP,
            bias-free linear), ``"linear"`` (the backbone's own head with a new final
            ``nn.Linear``), or ``"auto"`` (``irn`` for ResNets, ``linear`` otherwise).
        output_stride: 16 or 32, for the ``irn`` head.
        pretrained: ``"imagenet"`` (torchvision weight enum; a ValueError saying so when the
            weights cannot be downloaded) or ``"none"`` (random initialisation).
        init: a local state dict loaded into everything but the new head (checked: every
            backbone parameter must be present with its shape).
        pool: ``"gap"`` (global average pooling) or ``"gmp"`` (global max pooling, the CAM
            paper's comparison; :func:`loupe.models.pooling.with_global_pooling`).
    """
    if pretrained not in ("imagenet", "none"):
        raise ValueError(f"--pretrained must be 'imagenet' or 'none', got {pretrained!r}")
    if output_stride not in (16, 32):
        raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
    if pool not in POOLS:
        raise ValueError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if backbone in SMALL_BACKBONES:
        if pretrained == "imagenet":
            raise ValueError(f"backbone {backbone!r} has no ImageNet weights; use --pretrained "
                             "none")
        pools, pointwise = SMALL_BACKBONES[backbone]
        model: nn.Module = SmallGAPNet(num_classes, pools=pools, pointwise=pointwise)
    elif backbone.startswith("timm:"):
        model = _timm_model(backbone[5:], num_classes, pretrained, pool)
    else:
        model = _torchvision_model(backbone, pretrained)
        resolved = head if head != "auto" else ("irn" if backbone in RESNETS else "linear")
        if resolved == "irn":
            if backbone not in RESNETS:
                raise ValueError(f"head 'irn' needs a ResNet backbone, got {backbone!r}")
            if output_stride == 16:
                block = model.layer4[0]
                for module in block.modules():
                    if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                        module.stride = (1, 1)
            model.fc = nn.Linear(model.fc.in_features, num_classes, bias=False)
        elif resolved == "linear":
            name = _final_linear(model)
            old = model.get_submodule(name)
            _replace_module(model, name, nn.Linear(old.in_features, num_classes))
        else:
            raise ValueError(f"head must be 'auto', 'irn' or 'linear', got {head!r}")
    if not backbone.startswith("timm:"):
        model = with_global_pooling(model, pool, backbone)
    if init is not None:
        load_backbone_weights(model, init, classifier_head(model))
    return model


def load_backbone_weights(model: nn.Module, path: str | Path, head: str) -> None:
    """Load a state dict file into ``model`` except its head ``head``: every other entry of
    the model must be in the file with the same shape (ValueError naming the file otherwise)."""
    state = read_init_weights(path)
    prefix = head + "."
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or wrong:
        raise ValueError(f"{path}: does not fit {type(model).__name__} (missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}; shape mismatch {wrong[:3]})")
    model.load_state_dict({k: state[k] for k in own}, strict=False)


SEGMENTER_BACKBONES = {
    "resnet50": ("deeplabv3_resnet50", "ResNet50_Weights"),
    "mobilenet_v3_large": ("deeplabv3_mobilenet_v3_large", "MobileNet_V3_Large_Weights"),
}


def build_segmenter(
    backbone: str, num_classes: int, *, pretrained: str = "none", init: str | None = None
) -> nn.Module:
    """torchvision DeepLabV3 with ``num_classes`` outputs (background included), no auxiliary
    head. ``pretrained="imagenet"`` starts the backbone from torchvision's ImageNet weights
    (downloaded; a ValueError saying so offline); ``init`` loads a local ImageNet
    *classification* state dict of the same backbone (``resnet50`` / ``mobilenet_v3_large``,
    its classifier is ignored). The model maps ``(B, 3, H, W)`` to ``{"out": (B, N, H, W)}``."""
    if backbone not in SEGMENTER_BACKBONES:
        raise ValueError(f"unknown segmentation backbone {backbone!r}; choose one of: "
                         f"{', '.join(SEGMENTER_BACKBONES)}")
    if pretrained not in ("imagenet", "none"):
        raise ValueError(f"--pretrained must be 'imagenet' or 'none', got {pretrained!r}")
    builder_name, weights_name = SEGMENTER_BACKBONES[backbone]
    builder = getattr(torchvision.models.segmentation, builder_name)
    weights_backbone = None
    if pretrained == "imagenet":
        weights_backbone = getattr(torchvision.models, weights_name).IMAGENET1K_V1
    try:
        model = builder(weights=None, weights_backbone=weights_backbone,
                        num_classes=num_classes, aux_loss=False)
    except (OSError, RuntimeError) as error:
        raise ValueError(f"{OFFLINE_MESSAGE} ({backbone}: {error})") from error
    if init is not None:
        _load_backbone(model, backbone, init)
    return model


def _load_backbone(model: nn.Module, backbone: str, path: str) -> None:
    """Classification weights -> ``model.backbone`` (an IntermediateLayerGetter)."""
    state = read_init_weights(path)
    if backbone == "mobilenet_v3_large":  # the getter wraps ``features``: drop that prefix
        state = {k.removeprefix("features."): v for k, v in state.items()
                 if k.startswith("features.")}
    own = model.backbone.state_dict()
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if missing:
        raise ValueError(f"{path}: not a {backbone} classification state dict (missing or "
                         f"mis-shaped: {missing[:5]})")
    model.backbone.load_state_dict({k: state[k] for k in own})


def read_init_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an ``--init`` file; errors name the option and the file."""
    try:
        return read_state_dict(path)
    except ValueError as error:
        detail = str(error).removeprefix(f"{path}: ")
        raise ValueError(f"--init {path}: cannot read ({detail})") from error
