"""RandomCAM: a sanity baseline with random channel weights (pytorch-grad-cam's ``RandomCAM``).

A map built from the target layer's activations with weights that know nothing about the
class or the model's output. A method whose maps score no better than these is showing the
activations' structure, not explaining the class (Adebayo et al., "Sanity Checks for
Saliency Maps", NeurIPS 2018, make the same point with randomised models).
"""

from __future__ import annotations

import torch

from loupe.context import MapContext
from loupe.methods._perturb import seeded_generator
from loupe.methods.augment import aug_smoothable
from loupe.methods.eigen import zero_padding
from loupe.methods.projection import channel_maps
from loupe.registry import register


def random_weights(channels: int, *, seed: int | None = 0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``(C,)`` weights uniform in [-1, 1), drawn with ``generator`` if given, else with a CPU
    generator seeded with ``seed`` (so a seed gives the same weights on every device)."""
    generator = seeded_generator(seed, generator)
    return torch.rand(channels, generator=generator, device=generator.device) * 2 - 1


@register("randomcam", uses_layer=True, gradients=False, stochastic=True,
          paper="sanity baseline (pytorch-grad-cam's RandomCAM): random channel weights "
          "U(-1, 1)")
@aug_smoothable
def randomcam(ctx: MapContext, *, eigen_smooth: bool = False, seed: int | None = 0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """RandomCAM: ``ReLU(sum_c w_c A_c)`` with ``w ~ U(-1, 1)^C`` drawn once per call
    (:func:`random_weights`) and shared by every image and target, so an image's map does not
    depend on its batch and the same seed gives the same maps. pytorch-grad-cam draws new
    weights per image and per call. One forward, no backward. ``(B, K, h, w)``."""
    output = ctx.inference_output()
    with torch.no_grad():
        targets = ctx.targets.bind(output)
        activation = ctx.activation().float()
        weights = random_weights(activation.shape[1], seed=seed, generator=generator)
        weighted = weights.to(activation.device)[:, None, None] * activation
        maps = channel_maps(weighted[:, None], eigen_smooth)
    return zero_padding(maps.expand(-1, targets.count, -1, -1), targets)
