"""Targets: which output each map explains.

``targets`` may be ``None`` (the top-1 class of each image), an int (that class for every
image), a list with one class per image, a list of lists or a ``(B, K)`` tensor (several
classes per image; ragged lists are padded with -1, whose maps are all zero), or a callable /
list of ``K`` callables ``output -> (B,)`` scores for outputs that are not class logits
(segmentation, detection, a single unit).

Model outputs need not be tensors: class targets read the logits out of a dict (``"logits"``
or torchvision segmentation's ``"out"``), a tuple (its first element) or a HuggingFace
``transformers`` output (``.logits``), see :func:`output_tensor`. Score functions receive the
model's output as it is; the factories below cover the usual cases, as pytorch-grad-cam's
target classes do:

- :class:`ClassScore`: one class logit (classification, any output :func:`output_tensor` reads).
- :class:`SegmentationScore`: a class's logits summed over a pixel mask (torchvision DeepLabV3
  / FCN, whose output is ``{"out": (B, C, H, W)}``).
- :class:`BoxScore`: the class score plus the IoU of the detection that matches a given box
  (torchvision Faster R-CNN and the other detectors that return one dict per image).

Score functions see every row the method runs: the images themselves, or copies of them
(noise samples, path points, shuffles) in chunks. A function with an ``of_rows(image_of_row)``
method (the factories here) is re-indexed for copies by :meth:`Targets.of_rows`, so one mask
or box per image also works with SmoothGrad, Integrated Gradients and shuffle; other methods
that batch copies without :meth:`Targets.of_rows` (Score-CAM) fit shared values only, and a
factory raises a TargetError when its per-image values do not match the rows it gets (it
cannot tell when the counts match by chance). Detection models: name the layer
(``target_layer="backbone.body.layer4"`` for torchvision's ResNet-FPN detectors; the FPN
levels are a dict, which no layer method reads) and pass images ``(B, 3, H, W)`` in [0, 1].
torchvision's detectors resize each image and pad it to a multiple of 32 inside the model, so
a layer map covers the padded image: choose sizes whose resized sides are multiples of 32 (or
crop the map with ``upsample=False``) for maps that line up with the input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn
from torchvision.ops import box_iou

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
    padded: False when no entry of ``classes`` is padding; True when some may be (copies of
    rows made by :meth:`of_rows` keep it), so that maps need zeroing only then.
    largest: the largest entry of ``classes`` when :func:`resolve_targets` read it (the range
    check then needs no second reduction), else None.
    """

    batch_size: int
    classes: torch.Tensor | None = None
    functions: tuple[ScoreFunction, ...] | None = None
    padded: bool = True
    largest: int | None = None

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
            return replace(self, classes=logits.detach().argmax(1, keepdim=True), padded=False)
        _check_range(self.classes, logits.shape[1], self.largest)
        return self

    def scores(self, output: torch.Tensor) -> torch.Tensor:
        """``(B', K)`` target scores from a model output; ``B'`` may be a multiple of ``B``
        (copies of each image laid out image-major, e.g. noise samples or shuffles)."""
        if self.functions is not None:
            return torch.stack([_function_scores(f, output) for f in self.functions], dim=1)
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
        if self.functions is not None:  # score functions with one value per image follow
            functions = tuple(_function_of_rows(f, image_of_row) for f in self.functions)
            return replace(self, batch_size=len(image_of_row), functions=functions)
        if self.classes is None:
            return replace(self, batch_size=len(image_of_row))
        classes = self.classes.to(image_of_row.device)[image_of_row]
        return replace(self, batch_size=len(image_of_row), classes=classes, largest=None)

    def ensure_bound(self, model: nn.Module, images: torch.Tensor) -> Targets:
        """Bound targets, running one no-grad forward of the clean images only if needed
        (top-1 targets); given classes are range-checked by :meth:`scores`."""
        if self.bound:
            return self
        with torch.no_grad():
            return self.bind(model(images))


def output_tensor(output: object) -> torch.Tensor:
    """The prediction tensor in a model output: the tensor itself; ``.logits`` of a HuggingFace
    ``transformers`` output; of a dict, ``"logits"``, else ``"out"`` (torchvision
    segmentation), else its only value; of a tuple or list of tensors, the first element
    (``(logits, aux)``). A TargetError names what was found otherwise (a detection model's
    list of dicts: use :class:`BoxScore`)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping):
        for key in ("logits", "out"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        if len(output) == 1:
            return output_tensor(next(iter(output.values())))
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TargetError(
        f"cannot find the prediction tensor in a model output of type {_describe(output)}; "
        "pass score functions as targets (loupe.targets.BoxScore for detection models)"
    )


def _describe(output: object) -> str:
    if isinstance(output, Mapping):
        return f"{type(output).__name__} with keys {', '.join(map(repr, output))}"
    if isinstance(output, (tuple, list)) and output:
        return f"{type(output).__name__} of {type(output[0]).__name__}"
    return type(output).__name__


def _as_logits(output: object) -> torch.Tensor:
    logits = output_tensor(output)
    if logits.dim() != 2:
        raise TargetError(
            f"class targets need a model output of shape (B, num_classes), got "
            f"{tuple(logits.shape)}; pass score functions as targets for other outputs "
            "(loupe.targets.SegmentationScore for segmentation maps)"
        )
    return logits


def _function_of_rows(function: ScoreFunction, image_of_row: torch.Tensor) -> ScoreFunction:
    """The score function of copies: ``function.of_rows(image_of_row)`` where it has one (the
    factories below, whose per-image values must follow the copies), else ``function``."""
    of_rows = getattr(function, "of_rows", None)
    return of_rows(image_of_row) if callable(of_rows) else function


def _function_scores(function: ScoreFunction, output: object) -> torch.Tensor:
    scores = function(output)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise TargetError(f"a score function must return one score per row (B,), got {shape}")
    return scores


def _check_range(classes: torch.Tensor, num_classes: int, largest: int | None = None) -> None:
    # padding (-1) is below any class, so the largest entry is the largest real class
    if largest is None:
        largest = int(classes.max()) if classes.numel() else -1
    if largest >= num_classes:
        raise TargetError(
            f"target class {largest} is out of range for a model with "
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
    values = classes.flatten().tolist()  # one read, also from a GPU (min and max need two)
    smallest, largest = (min(values), max(values)) if values else (0, -1)
    if smallest < -1:
        raise TargetError(f"target classes must be >= 0 (or -1 for padding), got {smallest}")
    return Targets(batch_size, classes=classes.to(device), padded=smallest < 0, largest=largest)


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
        classes = classes.unsqueeze(1) if classes.dim() == 1 else classes
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


# --- score functions: pytorch-grad-cam style targets ----------------------------------------


def _per_row(values: torch.Tensor, rows: int, name: str) -> torch.Tensor:
    """``values`` ``(N, ...)`` for ``rows`` rows: one shared value (N = 1) or one per row."""
    if values.shape[0] == 1:
        return values.expand(rows, *values.shape[1:])
    if values.shape[0] != rows:
        raise TargetError(
            f"{name} gives {values.shape[0]} values for a model output of {rows} rows; one "
            "value per image fits methods that run the images or copies made with "
            "Targets.of_rows: give one shared value or explain the images one at a time"
        )
    return values


def _rows_of(values: object, image_of_row: torch.Tensor, dims: int) -> object:
    """``values`` for copies of images ``image_of_row``: per-image values (a leading image
    axis of more than one, beyond ``dims`` dimensions) are indexed, shared values kept."""
    tensor = torch.as_tensor(values)
    if tensor.dim() <= dims or tensor.shape[0] == 1:
        return values
    return tensor[image_of_row.to(tensor.device)]


def _check_label(label: torch.Tensor, count: int, what: str) -> None:
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= count):
        raise TargetError(f"label {label.tolist()} is out of range for {count} {what}")


@dataclass(frozen=True, eq=False)
class ClassScore:
    """Score function ``S = y[:, c]``: the logit of class ``label`` in any output that
    :func:`output_tensor` reads (a tensor, a dict, a tuple, a HuggingFace output).

    label: one class for every row, or a sequence / ``(B,)`` tensor with one class per image.
    Returns ``(B,)``. The same maps as the class targets ``label`` (pytorch-grad-cam's
    ``ClassifierOutputTarget``)."""

    label: int | Sequence[int] | torch.Tensor

    def __call__(self, output: object) -> torch.Tensor:
        logits = _as_logits(output)
        labels = torch.as_tensor(self.label, device=logits.device).long().reshape(-1)
        _check_label(labels, logits.shape[1], "classes")
        labels = _per_row(labels, logits.shape[0], "ClassScore label")
        return logits.gather(1, labels[:, None])[:, 0]

    def of_rows(self, image_of_row: torch.Tensor) -> ClassScore:
        """The score function of copies of images ``image_of_row`` ``(R,)``."""
        return replace(self, label=_rows_of(self.label, image_of_row, 0))


@dataclass(frozen=True, eq=False)
class SegmentationScore:
    """Score function ``S = sum_ij M_ij y[c, i, j]``: the logits of class ``label`` summed
    over the pixel ``mask`` (pytorch-grad-cam's ``SemanticSegmentationTarget``).

    For segmentation models whose output is ``(B, C, H, W)`` logits or a dict holding them
    (torchvision DeepLabV3 / FCN: ``{"out": ...}``, at the input's resolution).
    mask: ``(H, W)`` for every row or ``(B, H, W)`` one per image, bool or float weights, at
    the output's resolution (a tensor or a NumPy array). Returns ``(B,)``."""

    label: int
    mask: object

    def __call__(self, output: object) -> torch.Tensor:
        logits = output_tensor(output)
        if logits.dim() != 4:
            raise TargetError(
                f"SegmentationScore needs segmentation logits (B, C, H, W), got "
                f"{tuple(logits.shape)}"
            )
        _check_label(torch.tensor([self.label]), logits.shape[1], "output channels")
        mask = torch.as_tensor(self.mask).to(device=logits.device, dtype=logits.dtype)
        mask = mask[None] if mask.dim() == 2 else mask
        if mask.dim() != 3 or mask.shape[-2:] != logits.shape[-2:]:
            raise TargetError(
                f"SegmentationScore mask of shape {tuple(mask.shape)} does not fit the "
                f"output's {tuple(logits.shape[-2:])} pixels: give (H, W) or (B, H, W)"
            )
        mask = _per_row(mask, logits.shape[0], "SegmentationScore mask")
        return (logits[:, self.label] * mask).sum((-2, -1))

    def of_rows(self, image_of_row: torch.Tensor) -> SegmentationScore:
        """The score function of copies of images ``image_of_row`` ``(R,)``."""
        return replace(self, mask=_rows_of(self.mask, image_of_row, 2))


@dataclass(frozen=True, eq=False)
class BoxScore:
    """Score function of one detected box (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``
    for one box): of the detections of a row, the one with the largest IoU with ``box``
    scores ``S = IoU(box, d) + score_d`` if that IoU exceeds ``iou_threshold`` and its label
    is ``label``, else 0 (the detection moved or changed class).

    For detection models that return one dict per image with ``"boxes"`` ``(N, 4)``
    ``(x1, y1, x2, y2)``, ``"labels"`` and ``"scores"`` (torchvision Faster R-CNN,
    RetinaNet, FCOS, SSD). label: int or one per image; box: ``(4,)`` or ``(B, 4)`` in the
    input's pixels, usually a detection of a first forward. Returns ``(B,)``. For the
    sum over several boxes, as pytorch-grad-cam does, add the scores of several BoxScores.
    """

    label: int | Sequence[int] | torch.Tensor
    box: object
    iou_threshold: float = 0.5

    def __call__(self, output: object) -> torch.Tensor:
        keys = {"boxes", "labels", "scores"}
        if not (isinstance(output, (list, tuple)) and output
                and all(isinstance(o, Mapping) and keys <= set(o) for o in output)):
            raise TargetError(
                "BoxScore needs a detection model's output, one dict with 'boxes', 'labels' "
                f"and 'scores' per image; got {_describe(output)}"
            )
        rows = len(output)
        boxes = _per_row(torch.as_tensor(self.box, dtype=torch.float32).reshape(-1, 4), rows,
                         "BoxScore box")
        labels = _per_row(torch.as_tensor(self.label).long().reshape(-1), rows, "BoxScore label")
        return torch.stack([
            _box_score(found, boxes[i], int(labels[i]), self.iou_threshold)
            for i, found in enumerate(output)
        ])

    def of_rows(self, image_of_row: torch.Tensor) -> BoxScore:
        """The score function of copies of images ``image_of_row`` ``(R,)``."""
        return replace(self, label=_rows_of(self.label, image_of_row, 0),
                       box=_rows_of(self.box, image_of_row, 1))


def _box_score(found: Mapping, box: torch.Tensor, label: int, threshold: float) -> torch.Tensor:
    """``IoU + score`` of the detection in ``found`` that best overlaps ``box``, or a zero
    that stays in the graph (so that a row without a match gives a zero map, not an error)."""
    zero = found["scores"].sum() * 0
    if len(found["boxes"]) == 0:
        return zero
    ious = box_iou(box[None].to(found["boxes"]), found["boxes"])[0]
    best = ious.argmax()
    if ious[best] > threshold and int(found["labels"][best]) == label:
        return ious[best] + found["scores"][best]
    return zero
