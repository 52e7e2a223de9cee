"""The ImageNet-1k class names, shipped with the package (``imagenet_classes.txt``: the 1,000
names of ``torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``, one a line,
in the standard class order), so that a classifier with an ImageNet-sized head and no labels
of its own still prints ``tiger cat (282)`` rather than ``class 282``."""

from __future__ import annotations

from functools import cache
from importlib import resources

IMAGENET_CLASSES = 1000
#: TF-slim classifiers put a "background" output before the 1,000 classes.
BACKGROUND_FIRST = "background"


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in class-index order (``[282] == "tiger cat"``)."""
    text = resources.files("loupe.data").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != IMAGENET_CLASSES:  # a damaged installation, not a user error
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, not 1000")
    return names


def default_class_names(outputs: int | None) -> tuple[str, ...] | None:
    """Class names for a head of ``outputs`` classes that brings none: ImageNet's for 1,000
    outputs, ``background`` then ImageNet's for 1,001 (TF-slim), else None."""
    if outputs == IMAGENET_CLASSES:
        return imagenet_class_names()
    if outputs == IMAGENET_CLASSES + 1:
        return (BACKGROUND_FIRST, *imagenet_class_names())
    return None
