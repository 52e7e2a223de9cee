"""AMN, the activation manipulation network (Lee, Kim and Shim, "Threshold Matters in WSSS:
Manipulating the Activation for the Robust and Accurate Segmentation Model Against
Thresholds", CVPR 2022).

A segmentation-style network trained after the classifier: a backbone, the image-level label
vector projected to the feature channels and multiplied into the features (label
conditioning), and an ASPP head with one output per class plus background::

    logits = ASPP(Dropout(backbone(x) * (W_l y + b_l)[..., None, None]))   (B, 1 + N, h, w)

(``y`` the ``(B, N)`` multi-hot labels, channel 0 = background, channel ``1 + k`` = class
``k``; the authors' ``net/resnet50_amn.py``: ResNet-50 with output stride 16, ``Linear(20,
2048)``, ``Dropout(0.1)`` and the sum of four 3x3 convolutions with dilations 6, 12, 18, 24).

:class:`AMNModel` bundles the network with the classifier it was trained from: a run folder
of ``loupe train-amn`` is one model. ``model(images)`` gives the classifier's logits
``(B, N)`` (what ``loupe maps`` reads to pick and score classes), ``model(images, labels)``
the network's per-pixel logits, which the ``amn`` method (:mod:`loupe.methods.amn`) turns
into class maps. The backbone is any of :func:`loupe.models.build_classifier`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torch import nn

from loupe.models.networks import SmallGAPNet, build_classifier

#: The authors' ASPP dilation rates and dropout.
AMN_RATES = (6, 12, 18, 24)
AMN_DROPOUT = 0.1


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as DeepLab-v2 and AMN use it: the sum of 3x3
    convolutions with the given dilations (same padding), ``(B, C, h, w) -> (B, out, h, w)``.
    Weights start from N(0, 0.01), biases from 0 (the authors' initialisation)."""

    def __init__(self, channels: int, out_channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, out_channels, 3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.convs:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([conv(x) for conv in self.convs]).sum(0)


class AMNHead(nn.Module):
    """What AMN adds to the backbone (the "newly added" parameters, trained at the higher
    learning rate): the label encoder ``Linear(N, C)`` and the dropout + ASPP classifier."""

    def __init__(self, channels: int, num_classes: int, rates: Sequence[int] = AMN_RATES,
                 dropout: float = AMN_DROPOUT) -> None:
        super().__init__()
        self.label_encoder = nn.Linear(num_classes, channels)
        self.dropout = nn.Dropout(dropout)
        self.aspp = ASPP(channels, num_classes + 1, rates)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` features and ``(B, N)`` labels -> ``(B, 1 + N, h, w)`` logits."""
        scale = self.label_encoder(labels.to(features.dtype))[..., None, None]
        return self.aspp(self.dropout(features * scale))


class AMNNetwork(nn.Module):
    """The label-conditioned network: ``(B, 3, H, W)`` images and ``(B, N)`` labels ->
    ``(B, 1 + N, h, w)`` logits at the backbone's resolution, background first."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int,
                 rates: Sequence[int] = AMN_RATES, dropout: float = AMN_DROPOUT) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        self.head = AMNHead(channels, num_classes, rates, dropout)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.dim() != 2 or labels.shape != (images.shape[0], self.num_classes):
            raise ValueError(f"labels must be ({images.shape[0]}, {self.num_classes}) multi-hot "
                             f"image-level labels, got {tuple(labels.shape)}")
        return self.head(self.backbone(images), labels)


class AMNModel(nn.Module):
    """An AMN run: the network and the (frozen) classifier it was trained from.

    ``model(images)`` -> the classifier's logits ``(B, N)``; ``model(images, labels)`` -> the
    network's logits ``(B, 1 + N, h, w)``. ``label_conditioned`` tells the ``amn`` method
    that the model takes labels. The network is registered first, so that the classifier's
    final weight is the last weight of the state dict (:func:`loupe.models.num_outputs`).
    """

    label_conditioned = True

    def __init__(self, network: AMNNetwork, classifier: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.classifier = classifier

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            return self.classifier(images)
        return self.network(images, labels)


class _ForwardFeatures(nn.Module):
    """A timm model's ``forward_features`` as a module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def backbone_features(classifier: nn.Module) -> nn.Module:
    """The part of a classifier built by :func:`~loupe.models.build_classifier` that maps
    images ``(B, 3, H, W)`` to the feature map ``(B, C, h, w)`` its head pools (its modules,
    not copies): a torchvision ResNet's stem and four stages, DenseNet's ``features`` and
    ReLU, the ``features`` of :class:`~loupe.models.SmallGAPNet` and of the other torchvision
    CNNs (MobileNet, EfficientNet, VGG, ConvNeXt, ...), a timm model's ``forward_features``.
    A ValueError for other models."""
    if isinstance(classifier, torchvision.models.ResNet):
        c = classifier
        return nn.Sequential(c.conv1, c.bn1, c.relu, c.maxpool, c.layer1, c.layer2, c.layer3,
                             c.layer4)
    if isinstance(classifier, torchvision.models.DenseNet):
        return nn.Sequential(classifier.features, nn.ReLU())
    if callable(getattr(classifier, "forward_features", None)):
        return _ForwardFeatures(classifier)
    features = getattr(classifier, "features", None)
    if isinstance(classifier, SmallGAPNet) or isinstance(features, nn.Module):
        return features  # type: ignore[return-value]
    raise ValueError(f"AMN needs a backbone whose feature map it can read; "
                     f"{type(classifier).__name__} has no 'features' (torchvision CNNs, "
                     "ResNets, timm CNNs and 'small' are supported)")


@torch.no_grad()
def feature_channels(backbone: nn.Module, size: int = 64) -> int:
    """The channels ``C`` of the feature map of ``backbone`` (one forward of a ``size``-pixel
    zero image in eval mode, the training flags restored); a ValueError when it is not a
    ``(B, C, h, w)`` map (a ViT's tokens)."""
    training = {m: m.training for m in backbone.modules()}
    device = next(backbone.parameters()).device
    try:
        backbone.eval()
        features = backbone(torch.zeros(1, 3, size, size, device=device))
    finally:
        for module, flag in training.items():
            module.train(flag)
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(f"AMN needs a (B, C, h, w) feature map; the backbone gives {shape}")
    return int(features.shape[1])


def amn_spec(classifier_model: dict[str, Any], channels: int,
             rates: Sequence[int] = AMN_RATES, dropout: float = AMN_DROPOUT) -> dict[str, Any]:
    """The ``"model"`` entry of an AMN run's ``model.json``: the classifier's build arguments
    and the network's."""
    return {"classifier": dict(classifier_model), "channels": int(channels),
            "rates": [int(r) for r in rates], "dropout": float(dropout)}


def build_amn(classifier: dict[str, Any], channels: int, rates: Sequence[int] = AMN_RATES,
              dropout: float = AMN_DROPOUT) -> AMNModel:
    """An untrained :class:`AMNModel` from the arguments of :func:`amn_spec` (the classifier
    and the network's backbone are two separately built copies of the classifier's
    architecture, randomly initialised; load a state dict into it)."""
    network = AMNNetwork(backbone_features(build_classifier(**classifier, pretrained="none")),
                         channels, int(classifier["num_classes"]), rates, dropout)
    return AMNModel(network, build_classifier(**classifier, pretrained="none"))
