"""Targets: which output each map explains.

``targets`` may be ``None`` (the top-1 class of each image), an int (that class for every
image), a list with one class per image, a list of lists or a ``(B, K)`` tensor (several
classes per image; ragged lists are padded with -1, whose maps are all zero), or a callable /
list of ``K`` callables ``output -> (B,)`` scores for outputs that are not class logits
(segmentation, detection, a single unit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]
TargetsLike = (
    None | int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | ScoreFunction
    | Sequence[ScoreFunction]
)


class TargetError(ValueError):
    """Targets that do not fit the images or the model's outputs."""


@dataclass(frozen=True)
class Targets:
    """Resolved targets of a batch of ``batch_size`` images.

    classes: ``(B, K)`` long, -1 = padding; ``None`` while unbound (top-1 not yet known) or
    when ``functions`` are used.
    functions: ``K`` score functions ``output -> (B,)``, or ``None``.
    """

    batch_size: int
    classes: torch.Tensor | None = None
    functions: tuple[ScoreFunction, ...] | None = None

    @property
    def bound(self) -> bool:
        return self.classes is not None or self.functions is not None

    @property
    def count(self) -> int:
        """K, the number of maps per image."""
        if self.functions is not None:
            return len(self.functions)
        return 1 if self.classes is None else self.classes.shape[1]

    @property
    def valid(self) -> torch.Tensor | None:
        """``(B, K)`` bool, False on padding; None for score functions."""
        return None if self.classes is None else self.classes >= 0

    def bind(self, output: torch.Tensor) -> Targets:
        """Targets with the top-1 class filled in from ``output`` (the clean images' logits),
        checked against the number of outputs."""
        if self.functions is not None:
            return self
        logits = _as_logits(output)
        if self.classes is None:
            return replace(self, classes=logits.detach().argmax(1, keepdim=True))
        _check_range(self.classes, logits.shape[1])
        return self

    def scores(self, output: torch.Tensor) -> torch.Tensor:
        """``(B', K)`` target scores from a model output; ``B'`` may be a multiple of ``B``
        (copies of each image laid out image-major, e.g. noise samples or shuffles)."""
        if self.functions is not None:
            return torch.stack([f(output) for f in self.functions], dim=1)
        if self.classes is None:
            raise TargetError("targets are not bound: call bind() on the clean output first")
        logits = _as_logits(output)
        _check_range(self.classes, logits.shape[1])
        repeats = logits.shape[0] // self.batch_size
        classes = self.classes.to(logits.device).repeat_interleave(repeats, dim=0)
        picked = logits.gather(1, classes.clamp(min=0))
        return picked * (classes >= 0)

    def of_rows(self, image_of_row: torch.Tensor) -> Targets:
        """Targets of copies (noise samples, path points, shuffles) whose image indices are
        ``image_of_row`` ``(R,)``."""
        if self.classes is None:
            return replace(self, batch_size=len(image_of_row))
        classes = self.classes.to(image_of_row.device)[image_of_row]
        return replace(self, batch_size=len(image_of_row), classes=classes)

    def ensure_bound(self, model: nn.Module, images: torch.Tensor) -> Targets:
        """Bound targets, running one no-grad forward of the clean images only if needed
        (top-1 targets); given classes are range-checked by :meth:`scores`."""
        if self.bound:
            return self
        with torch.no_grad():
            return self.bind(model(images))


def _as_logits(output: torch.Tensor) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise TargetError(
            f"class targets need a model output of shape (B, num_classes), got {shape}; "
            "pass score functions as targets for other outputs"
        )
    return output


def _check_range(classes: torch.Tensor, num_classes: int) -> None:
    real = classes[classes >= 0]
    if real.numel() and int(real.max()) >= num_classes:
        raise TargetError(
            f"target class {int(real.max())} is out of range for a model with "
            f"{num_classes} outputs (valid: 0..{num_classes - 1})"
        )


def resolve_targets(targets: TargetsLike, batch_size: int, device: torch.device) -> Targets:
    """Turn any accepted form of ``targets`` into :class:`Targets` for ``batch_size`` images."""
    if targets is None:
        return Targets(batch_size)
    if callable(targets) and not isinstance(targets, torch.Tensor):
        return Targets(batch_size, functions=(targets,))
    if isinstance(targets, Sequence) and targets and all(callable(t) for t in targets):
        return Targets(batch_size, functions=tuple(targets))
    classes = _classes_tensor(targets, batch_size)
    if (classes < -1).any():
        raise TargetError(
            f"target classes must be >= 0 (or -1 for padding), got {int(classes.min())}"
        )
    return Targets(batch_size, classes=classes.to(device))


def _classes_tensor(targets: object, batch_size: int) -> torch.Tensor:
    if isinstance(targets, int):
        return torch.full((batch_size, 1), targets, dtype=torch.long)
    if isinstance(targets, torch.Tensor):
        if targets.dim() not in (1, 2) or targets.is_floating_point() or targets.is_complex():
            raise TargetError(
                "a targets tensor must hold integer classes, shape (B,) or (B, K); got "
                f"{targets.dtype} of shape {tuple(targets.shape)}"
            )
        classes = targets.long()
        classes = classes[:, None] if classes.dim() == 1 else classes
    elif isinstance(targets, Sequence) and all(isinstance(t, int) for t in targets):
        classes = torch.tensor(list(targets), dtype=torch.long)[:, None]
    elif (
        isinstance(targets, Sequence) and not isinstance(targets, str)
        and all(isinstance(t, Sequence) and not isinstance(t, str) for t in targets)
    ):
        width = max((len(t) for t in targets), default=0)
        if width == 0:
            raise TargetError("every image needs at least one target class")
        rows = [list(t) + [-1] * (width - len(t)) for t in targets]
        classes = torch.tensor(rows, dtype=torch.long)
    else:
        raise TargetError(
            "targets must be None, an int, a list of ints, a list of lists, a (B, K) tensor, "
            f"or score functions; got {type(targets).__name__}"
        )
    if classes.dim() != 2 or classes.shape[0] != batch_size:
        raise TargetError(
            f"targets give {classes.shape[0]} rows for {batch_size} images; "
            "give one class (or one list of classes) per image"
        )
    return classes
