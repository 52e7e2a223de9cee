"""What ``loupe explain`` explains in each image, for each kind of model.

- classification: the ``--target`` classes, else the ``--topk`` best; the score is the
  softmax (or sigmoid, or logit) of the class; targets are class logits.
- segmentation (torchvision DeepLabV3 / FCN / LR-ASPP): a class's logits summed over the
  pixels predicted as that class (:class:`loupe.targets.SegmentationScore`, pytorch-grad-cam's
  ``SemanticSegmentationTarget``), over every pixel when none is; without ``--target`` the
  ``--topk`` classes covering most pixels, background last; the score is the class's mean
  probability (or logit) over those pixels.
- detection (torchvision Faster R-CNN, RetinaNet, FCOS...): one detected box
  (:class:`loupe.targets.BoxScore`: IoU with the box plus the detection score); ``--target``
  names ``CLASS`` (its best detection) or ``CLASS:N`` (its N-th best, from 0); without it the
  ``--topk`` best detections; the score is the detection's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loupe.models.dense import DETECTION
from loupe.targets import BoxScore, ScoreFunction, SegmentationScore, output_tensor

logger = logging.getLogger(__name__)

BACKGROUND_NAMES = ("background", "__background__")


@dataclass(frozen=True)
class Wanted:
    """A ``--target`` value: a class, and for detection which of its boxes (0 = best)."""

    cls: int
    box_index: int = 0


@dataclass(frozen=True)
class Target:
    """One map to make for one image.

    cls: the class; score: what is printed and recorded; function: the score function
    (None: the class logit); box_index / box: the detection (``(x1, y1, x2, y2)`` in input
    pixels); region: for segmentation, the pixels the class score is summed over."""

    cls: int
    score: float
    function: ScoreFunction | None = None
    box_index: int | None = None
    box: tuple[float, ...] | None = None
    region: str | None = None


def parse_targets(values: Sequence[str], names: Sequence[str] | None, task: str
                  ) -> list[Wanted]:
    """``--target`` values as :class:`Wanted`: class indices or names (a full name or one of
    its comma-separated synonyms, case-insensitive), ``CLASS:N`` for detection."""
    wanted = []
    for value in values:
        text, box = value, 0
        if task == DETECTION and ":" in value:
            text, _, index = value.rpartition(":")
            if not index.isdigit():
                raise ValueError(f"--target {value!r}: the box index after ':' must be an "
                                 "integer >= 0, e.g. dog:1 for the second-best dog")
            box = int(index)
        wanted.append(Wanted(_class_index(text, value, names), box))
    return wanted


def _class_index(text: str, value: str, names: Sequence[str] | None) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    if names is None:
        raise ValueError(f"--target {value!r}: class names need --labels or weights with "
                         "class names")
    key = text.strip().lower()
    hits = [i for i, name in enumerate(names)
            if name.lower() == key or key in (s.strip().lower() for s in name.split(","))]
    if len(hits) != 1:
        problem = "matches several classes" if hits else "is not a class name"
        raise ValueError(f"--target {value!r} {problem}; give the class index instead")
    return hits[0]


def check_range(wanted: Sequence[Wanted], num_classes: int | None, topk: int | None) -> None:
    """A ValueError for a ``--target`` class or a ``--topk`` beyond the model's classes."""
    if num_classes is None:
        return
    bad = [w.cls for w in wanted if not 0 <= w.cls < num_classes]
    if bad:
        raise ValueError(f"--target {bad[0]} is out of range (0..{num_classes - 1})")
    if topk is not None and topk > num_classes:
        raise ValueError(f"--topk {topk} exceeds the model's {num_classes} classes")


def class_targets(logits: torch.Tensor, wanted: Sequence[Wanted] | None, topk: int,
                  kind: str) -> list[list[Target]]:
    """Classification: the targets of each image of a batch, from its logits ``(B, C)``."""
    if wanted:
        classes = torch.tensor([w.cls for w in wanted], device=logits.device)
        classes = classes.expand(logits.shape[0], -1)
    else:
        classes = logits.topk(topk, dim=1).indices
    scores = _scores(logits.float(), kind, dim=1).gather(1, classes)
    return [[Target(int(c), float(s)) for c, s in zip(cs.tolist(), ss.tolist(), strict=True)]
            for cs, ss in zip(classes, scores, strict=True)]


def _scores(logits: torch.Tensor, kind: str, dim: int) -> torch.Tensor:
    if kind == "softmax":
        return logits.softmax(dim)
    if kind == "sigmoid":
        return logits.sigmoid()
    return logits


def segmentation_targets(output: object, wanted: Sequence[Wanted] | None, topk: int,
                         kind: str, names: Sequence[str] | None) -> list[Target]:
    """Segmentation: the targets of one image from the model's output (``(1, C, H, W)``
    logits or torchvision's ``{"out": ...}``)."""
    logits = output_tensor(output)[0].float()  # (C, H, W)
    predicted = logits.argmax(0)
    area = torch.bincount(predicted.flatten(), minlength=logits.shape[0])
    if wanted:
        classes = [w.cls for w in wanted]
    else:
        background = names[0].lower() if names else ""
        order = sorted(range(len(area)), key=lambda c: (
            c == 0 and background in BACKGROUND_NAMES, -int(area[c])))
        classes = [c for c in order if area[c] > 0][:topk]
    probability = _scores(logits, kind, dim=0)
    found = []
    for cls in classes:
        mask = predicted == cls
        region = "predicted pixels"
        if not mask.any():
            mask, region = torch.ones_like(mask), "all pixels (class predicted nowhere)"
        score = float(probability[cls][mask].mean())
        found.append(Target(cls, score, SegmentationScore(cls, mask.float()), region=region))
    return found


def detection_targets(output: object, wanted: Sequence[Wanted] | None, topk: int,
                      image: str) -> list[Target]:
    """Detection: the targets of one image from the model's output (one dict with
    ``boxes``, ``labels``, ``scores`` sorted by score, as torchvision's detectors return)."""
    found = output[0]  # type: ignore[index]
    labels = found["labels"].tolist()
    index_in_class = [labels[:i].count(label) for i, label in enumerate(labels)]
    if wanted:
        picks = []
        for w in wanted:
            matches = [i for i, label in enumerate(labels) if label == w.cls]
            if w.box_index < len(matches):
                picks.append(matches[w.box_index])
            else:
                logger.warning("%s: no detection %d of class %d (%d found); nothing to explain "
                               "for it", image, w.box_index, w.cls, len(matches))
    else:
        picks = list(range(min(topk, len(labels))))
    return [
        Target(labels[i], float(found["scores"][i]),
               BoxScore(labels[i], found["boxes"][i].detach()), index_in_class[i],
               tuple(float(v) for v in found["boxes"][i]))
        for i in picks
    ]


def nonfinite_output(output: object) -> bool:
    """Whether a model output (a tensor, a dict, a list of dicts) holds NaN or Inf."""
    if isinstance(output, torch.Tensor):
        return output.is_floating_point() and not bool(torch.isfinite(output).all())
    if isinstance(output, dict):
        return any(nonfinite_output(v) for v in output.values())
    if isinstance(output, (list, tuple)):
        return any(nonfinite_output(v) for v in output)
    logits = getattr(output, "logits", None)
    return nonfinite_output(logits) if logits is not None else False
