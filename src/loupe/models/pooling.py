"""The global pooling of a classifier: average (GAP) or max (GMP), for ``loupe train --pool``.

Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016, compare
networks that end in global average pooling with the same networks ending in global max
pooling (``logits = W · max_ij A + b``): similar classification, worse localization with GMP,
which rewards one discriminative position rather than the object's extent. CAM reads both the
same way, ``CAM_k = sum_c W_kc A_c`` (:mod:`loupe.methods.heads`).

:func:`with_global_pooling` turns a classifier with global average pooling into the same
classifier with global max pooling, keeping every parameter and state-dict key:

- the last ``nn.AdaptiveAvgPool2d`` to ``1 x 1`` in module order, the one that feeds the
  classifier, becomes an ``nn.AdaptiveMaxPool2d(1)`` (ResNets, loupe's ``small`` nets, RegNet,
  EfficientNet, MobileNetV3, ConvNeXt, GoogLeNet, Inception, Swin, ...); the global average
  poolings inside the blocks (squeeze-and-excitation in EfficientNet, MobileNetV3, RegNet)
  stay as they are;
- torchvision's MobileNetV2 and DenseNet, which pool inside ``forward``, become a
  :class:`PooledClassifier` over the same ``features`` and ``classifier`` modules;
- timm models are built with ``global_pool="max"`` instead (:mod:`loupe.models.networks`).

Anything else (VGG and AlexNet pool to 7 x 7 / 6 x 6 and read an MLP; ShuffleNetV2, MNASNet
and the ViTs have no pooling module) is a ValueError naming the backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

#: The values of ``--pool``.
POOLS = ("gap", "gmp")


class PooledClassifier(nn.Module):
    """``features -> [ReLU] -> global pooling -> flatten -> classifier`` with the pooling as a
    module: torchvision's MobileNetV2 (``relu=False``) and DenseNet (``relu=True``) forward,
    over the same ``features`` and ``classifier`` modules (the state-dict keys are unchanged).

    ``(B, 3, H, W) -> features (B, C, h, w) -> logits (B, N)``."""

    def __init__(self, features: nn.Module, classifier: nn.Module, pool: nn.Module,
                 relu: bool = False) -> None:
        super().__init__()
        self.features = features
        self.pool = pool
        self.classifier = classifier
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        if self.relu:
            out = F.relu(out)
        return self.classifier(torch.flatten(self.pool(out), 1))


def _is_global(output_size: object) -> bool:
    sizes = output_size if isinstance(output_size, tuple) else (output_size, output_size)
    return all(s == 1 for s in sizes)


def with_global_pooling(model: nn.Module, pool: str, backbone: str) -> nn.Module:
    """``model`` with global ``pool`` (``"gap"``: unchanged, ``"gmp"``: max pooling, see the
    module docstring); ``backbone`` names the model in errors. Modifies ``model`` in place
    where it can and returns the model to use."""
    if pool not in POOLS:
        raise ValueError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if pool == "gap":
        return model
    if isinstance(model, torchvision.models.MobileNetV2 | torchvision.models.DenseNet):
        relu = isinstance(model, torchvision.models.DenseNet)
        return PooledClassifier(model.features, model.classifier, nn.AdaptiveMaxPool2d(1), relu)
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.AdaptiveAvgPool2d) and _is_global(module.output_size)]
    if not names:
        raise ValueError(
            f"--pool gmp: backbone {backbone!r} has no global average pooling module "
            "(nn.AdaptiveAvgPool2d(1)) to replace; supported: ResNets, small, RegNet, "
            "EfficientNet, MobileNetV2/V3, DenseNet, ConvNeXt, GoogLeNet, Inception, Swin and "
            "timm:NAME"
        )
    parent_name, _, child = names[-1].rpartition(".")  # the head's, after the blocks' SE pools
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.AdaptiveMaxPool2d(1))
    return model
