"""Average Drop and Increase in Confidence (Chattopadhay et al., "Grad-CAM++: Generalized
Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018).

The explanation image keeps each pixel in proportion to the map: ``E = x * M`` with ``M`` the
map min-max normalised to [0, 1] (broadcast over channels), as both torch-cam's
``ClassificationMetric`` and pytorch-grad-cam's ``CamMultImageConfidenceChange`` build it.
With ``Y`` the target's score on the image and ``O`` on ``E``:

- Average Drop ``= max(0, Y - O) / Y`` per map (the paper reports its mean, x100); lower is
  better. pytorch-grad-cam's ``DropInConfidence`` is the undivided ``max(0, Y - O)``.
- Increase in Confidence ``= 1[O > Y]`` per map (the paper reports the fraction); higher is
  better.

One forward per map (plus one per image for the clean score, shared with other metrics
through a :class:`~loupe.metrics._scoring.Scorer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loupe.masks.normalize import normalize
from loupe.metrics._scoring import Scorer, maps_for
from loupe.targets import Targets, TargetsLike


@dataclass(frozen=True)
class ConfidenceChange:
    """clean: ``(B, K)`` scores ``Y`` of the images; explained: ``(B, K)`` scores ``O`` of
    the explanation images ``x * M`` (NaN on padding targets)."""

    clean: torch.Tensor
    explained: torch.Tensor

    @property
    def average_drop(self) -> torch.Tensor:
        """``(B, K)`` ``max(0, Y - O) / Y``; NaN where ``Y <= 0`` (no confidence to drop)."""
        drop = (self.clean - self.explained).clamp(min=0) / self.clean
        return drop.where(self.clean > 0, torch.full_like(drop, float("nan")))

    @property
    def increase_in_confidence(self) -> torch.Tensor:
        """``(B, K)`` float ``1[O > Y]`` (NaN on padding targets)."""
        increase = (self.explained > self.clean).float()
        return increase.where(~torch.isnan(self.explained), self.explained)


def confidence_change(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: TargetsLike | Targets = None,
    *,
    score: str = "probability",
    chunk_size: int | None = None,
    scorer: Scorer | None = None,
) -> ConfidenceChange:
    """Scores of ``images`` ``(B, C, H, W)`` and of ``images * normalize(maps)`` for
    Chattopadhay et al.'s Average Drop and Increase in Confidence.

    Args:
        maps: ``(B, K, h, w)`` or ``(B, h, w)``, any range (min-max normalised here), resized
            bilinearly to the images.
        targets: one per map; None = each image's top-1 class.
        score: ``"probability"`` (softmax, as the paper) or ``"logit"``.
        chunk_size: explanation images per forward (None: from the image size, see
            :class:`~loupe.metrics._scoring.Scorer`); results do not depend on it.
        scorer: share clean scores with other metrics (then its targets/score/chunks count).
    """
    scorer = scorer or Scorer(model, images, targets, score=score, chunk_size=chunk_size)
    images = scorer.images
    weights = normalize(maps_for(maps, images, scorer.count))  # (B, K, H, W)

    def build(image_of: torch.Tensor, target_of: torch.Tensor, _step: torch.Tensor
              ) -> torch.Tensor:
        return images[image_of] * weights[image_of, target_of][:, None].to(images.dtype)

    explained = scorer.perturbed(1, build)[..., 0]
    return ConfidenceChange(scorer.clean(), explained)


def average_drop(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
    targets: TargetsLike | Targets = None, **options: object,
) -> torch.Tensor:
    """``(B, K)`` Average Drop per map, ``max(0, Y - O) / Y`` (Chattopadhay et al. 2018);
    options as :func:`confidence_change`."""
    return confidence_change(model, images, maps, targets, **options).average_drop


def increase_in_confidence(
    model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
    targets: TargetsLike | Targets = None, **options: object,
) -> torch.Tensor:
    """``(B, K)`` Increase in Confidence per map, ``1[O > Y]`` (Chattopadhay et al. 2018);
    options as :func:`confidence_change`."""
    return confidence_change(model, images, maps, targets, **options).increase_in_confidence
