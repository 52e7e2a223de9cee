"""The engine of the perturbation metrics: target scores of many perturbed copies, batched.

A perturbation metric scores rows ``(image b, target k, step s)``: copy ``s`` of image ``b``,
perturbed according to map ``(b, k)``, scored for target ``k``. :class:`Scorer` lays the rows
out image-major, builds each chunk of ``chunk_size`` rows with one gather (the metric's
``build`` function), runs the model once per chunk (on the CPU a frozen copy of it where that
is exact: :mod:`loupe._frozen`) and scatters the scores into ``(B, K, S)``. Rows of padding
targets (class -1) are never built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from loupe._frozen import Forward, inference_forward
from loupe.hooks import hooked
from loupe.methods._perturb import perturb_chunk_size
from loupe.targets import Targets, TargetsLike, resolve_targets

logger = logging.getLogger(__name__)

SCORES = ("probability", "logit")

# (image_of (R,), target_of (R,), step_of (R,)) -> perturbed inputs (R, C, H, W)
BuildRows = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Scorer:
    """Target scores of ``images`` ``(B, C, H, W)`` and of perturbed copies of them.

    ``score="probability"`` takes the softmax of class logits before picking the target's
    column (the confidence that Petsiuk et al., Chattopadhay et al. and Rong et al. report);
    ``"logit"`` picks the raw output, and is the only choice for score-function targets.
    Targets are bound on the clean images (top-1 when ``targets`` is None), so every metric
    of a batch explains the same classes. The clean scores are computed once, on demand.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        targets: TargetsLike | Targets = None,
        *,
        score: str = "probability",
        chunk_size: int | None = None,
    ) -> None:
        check_images(images)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if chunk_size is not None:
            check_positive_int(chunk_size, "chunk_size")
        self.model = model
        self.images = images.detach()
        self.score = score
        # None: the perturbation methods' rule (loupe.methods._perturb.perturb_chunk_size),
        # 32 on CUDA, on the CPU fewer for large images (4 at 3x224x224)
        self.chunk_size = perturb_chunk_size(chunk_size, self.images)
        resolved = (
            targets if isinstance(targets, Targets)
            else resolve_targets(targets, images.shape[0], images.device)
        )
        if score == "probability" and resolved.functions is not None:
            raise ValueError(
                "score='probability' needs class targets; use score='logit' with score functions"
            )
        self._clean: torch.Tensor | None = None
        self.targets = self._bind(resolved)

    @property
    def count(self) -> int:
        """K, the number of targets per image."""
        return self.targets.count

    @property
    def valid(self) -> torch.Tensor:
        """``(B, K)`` bool: False on padding targets."""
        valid = self.targets.valid
        if valid is None:
            return torch.ones(self.images.shape[0], self.count, dtype=torch.bool,
                              device=self.images.device)
        return valid.to(self.images.device)

    def _bind(self, targets: Targets) -> Targets:
        if targets.bound:
            return targets
        with prepared(self.model):
            output = self.model(self.images)
        bound = targets.bind(output)  # top-1: one valid target per image, no padding
        self._clean = bound.scores(self._transform(output)).float()
        return bound

    def _transform(self, output: torch.Tensor) -> torch.Tensor:
        if self.score == "probability":
            if not isinstance(output, torch.Tensor) or output.dim() != 2:
                raise ValueError(
                    "score='probability' needs a model output of shape (B, num_classes); "
                    "use score='logit' for other outputs"
                )
            return F.softmax(output.float(), dim=1)
        return output

    def row_scores(self, inputs: torch.Tensor, image_of: torch.Tensor,
                   target_of: torch.Tensor, forward: Forward | None = None) -> torch.Tensor:
        """``(R,)`` score of target ``target_of[r]`` of image ``image_of[r]`` on ``inputs[r]``;
        the model must already be prepared (:func:`prepared`). ``forward``: what runs the
        inputs (the model by default; :meth:`perturbed` passes its frozen copy)."""
        output = self._transform((forward or self.model)(inputs))
        scores = self.targets.of_rows(image_of).scores(output).float()
        return scores.gather(1, target_of[:, None])[:, 0]

    def clean(self) -> torch.Tensor:
        """``(B, K)`` float32 scores of the unperturbed images (NaN on padding targets)."""
        if self._clean is None:
            self._clean = self.perturbed(1, lambda image_of, _t, _s: self.images[image_of])[..., 0]
        return self._clean

    def perturbed(self, steps: int, build: BuildRows) -> torch.Tensor:
        """``(B, K, steps)`` float32 scores of the rows built by ``build``; NaN on padding.

        Rows are ``(b, k, s)`` over valid targets, image-major; ``build`` gets the index
        tensors of one chunk and returns its inputs ``(R, C, H, W)``.
        """
        batch, count = self.images.shape[0], self.count
        out = torch.full((batch, count, steps), float("nan"), device=self.images.device)
        pairs = self.valid.nonzero()  # (P, 2) image-major
        rows = torch.arange(len(pairs) * steps, device=self.images.device)
        logger.debug("scoring %d rows in chunks of %d", len(rows), self.chunk_size)
        forward: Forward | None = None
        with prepared(self.model):
            for chunk in rows.split(self.chunk_size):
                pair, step_of = chunk // steps, chunk % steps
                image_of, target_of = pairs[pair, 0], pairs[pair, 1]
                inputs = build(image_of, target_of, step_of)
                if forward is None:  # the model, or on the CPU its frozen copy
                    forward = inference_forward(self.model, inputs, len(rows))
                out[image_of, target_of, step_of] = self.row_scores(
                    inputs, image_of, target_of, forward)
        return out


@contextmanager
def prepared(model: nn.Module) -> Iterator[None]:
    """Eval mode, no parameter gradients, no autograd; everything restored on exit."""
    with hooked(model, []), torch.no_grad():
        yield


def check_images(images: object) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a 4D tensor (B, C, H, W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got {images.dtype}")


def check_positive_int(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def maps_for(maps: torch.Tensor, images: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """``maps`` ``(B, K, h, w)`` or ``(B, h, w)`` as float32 ``(B, K, H, W)`` on the images'
    device, bilinearly resized to the images' size when needed; checked against ``count``."""
    if not isinstance(maps, torch.Tensor) or maps.dim() not in (3, 4):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor (B, K, H, W) or (B, H, W), got {shape}")
    maps = maps[:, None] if maps.dim() == 3 else maps
    if maps.shape[0] != images.shape[0]:
        raise ValueError(
            f"maps cover {maps.shape[0]} images but images has {images.shape[0]}"
        )
    if count is not None and maps.shape[1] != count:
        raise ValueError(
            f"maps have {maps.shape[1]} map(s) per image but targets give {count}; "
            "give one map per target"
        )
    maps = maps.detach().to(images.device, torch.float32)
    if torch.isnan(maps).any():
        raise ValueError("maps contain NaN")
    if maps.shape[-2:] != images.shape[-2:]:
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return maps


def pixel_ranks(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``(..., H*W)`` long: the rank of each pixel of ``maps`` ``(..., H, W)``, 0 = the most
    relevant (highest value). Ties are broken by one random pixel order drawn from ``seed``
    (the same for every map, so ranks do not depend on the batch), as ROAD's authors break
    them with a fixed random offset; maps without ties rank the same for every seed."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    flat = maps.flatten(-2)
    pixels = flat.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.randperm(pixels, generator=generator).to(flat.device)
    order = shuffle[torch.argsort(flat[..., shuffle], dim=-1, descending=True, stable=True)]
    positions = torch.arange(pixels, device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)
