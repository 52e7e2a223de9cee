"""What a map method receives: :class:`MapContext`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loupe.hooks import Captured
from loupe.layers import Reshape
from loupe.targets import Targets


@dataclass(frozen=True)
class MapContext:
    """What a map method gets: the prepared model, the images, the resolved targets and, for
    layer methods, the target layer's name, its captured activation and the reshape."""

    model: nn.Module
    images: torch.Tensor
    targets: Targets
    layer: str | None
    captured: Captured
    reshape: Reshape

    def activation(self) -> torch.Tensor:
        """The target layer's last captured output as a grid ``(B, C, h, w)``."""
        if self.layer is None or self.layer not in self.captured:
            raise RuntimeError("no activation was captured; run the model inside the method")
        return self.reshape(self.captured[self.layer])
