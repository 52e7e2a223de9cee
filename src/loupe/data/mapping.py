"""From a classifier's classes to a data set's classes.

A class mapping gives each data-set class (by index, as in ``dataset.class_names``) the set of
classifier classes that stand for it; the background and classes without a counterpart get
the empty set. :func:`mapped_scores` scores a data-set class by the best of its classifier
classes, and :func:`mapped_targets` picks that best classifier class per image, so that
``loupe.explain(model, images, mapped_targets(logits, mapping))`` computes one map per data-set
class (``-1`` = no counterpart, which ``explain`` returns as an all-zero map).

``coco_to_imagenet.json`` (shipped) maps COCO-80 names to ImageNet-1k indices (torchvision's
order, checked against ``imagenet_labels_1001.txt`` where line ``i + 1`` is class ``i``). Only
clear counterparts are listed (57 of 80):

- animals: bird = every ImageNet bird (7-24, including 21 "kite", which is the bird, 80-100,
  127-146); cat = the domestic cats 281-285 (not the wild cats); dog = the dog breeds 151-268
  (not wolves or foxes); horse = 339 sorrel; zebra = 340; sheep = 348 ram; cow = 345 ox;
  elephant = 101 tusker, 385, 386; bear = 294-297 (not the pandas, not the teddy).
- vehicles: car = 436 station wagon, 468 cab, 511 convertible, 609 jeep, 627 limousine,
  656 minivan, 661 Model T, 751 race car, 817 sports car; truck = 555 fire engine, 569 garbage
  truck, 675 moving van, 717 pickup, 864 tow truck, 867 trailer truck; bus = 654 minibus,
  779 school bus, 874 trolleybus; train = 466 bullet train, 547 electric locomotive, 565
  freight car, 705 passenger car, 820 steam locomotive (not 829 streetcar); airplane = 404
  airliner, 895 warplane (not 908 wing); boat = 14 vessels (403 aircraft carrier ... 914 yawl,
  not 913 wreck); bicycle = 444 tandem, 671 mountain bike; motorcycle = 665 moped, 670
  scooter.
- objects and food, one-to-one or a few: traffic light 920, parking meter 704, bench 703
  (park bench), backpack 414, umbrella 879, handbag 748 (purse), tie 906 (Windsor tie), skis
  795, sports ball (nine balls), tennis racket 752, bottle (beer, pill, pop, water, wine
  bottles), cup 504 coffee mug + 968 cup, spoon 910 (wooden spoon), bowl 659 + 809, banana
  954, apple 948 (Granny Smith), orange 950, broccoli 937, hot dog 934, pizza 963, chair 423
  + 559 + 765, couch 831 (studio couch), potted plant 738 (flowerpot), bed 564 (four-poster),
  dining table 532, toilet 861 (toilet seat), tv 664 monitor + 851 television, laptop 620 +
  681 notebook, mouse 673, remote 761, keyboard 508, cell phone 487, microwave 651, toaster
  859, sink 896 (washbasin), refrigerator 760, clock 409 + 530 + 892, vase 883, teddy bear
  850, hair drier 589.
- no counterpart in ImageNet-1k: person, fire hydrant, stop sign, giraffe (ImageNet-1k has no
  giraffe class), suitcase, frisbee, snowboard, kite (the toy; ImageNet's "kite" is the bird),
  baseball bat, baseball glove, skateboard, surfboard, wine glass, fork, knife, sandwich,
  carrot, donut, cake, oven, book, scissors, toothbrush.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources

import torch

ClassMapping = tuple[tuple[int, ...], ...]
"""For each data-set class index, the classifier class indices that stand for it."""


def load_name_table(path: str | os.PathLike[str] | None = None) -> dict[str, list[int]]:
    """A JSON ``{data-set class name: [classifier indices]}``; the shipped
    ``coco_to_imagenet.json`` when ``path`` is None."""
    if path is None:
        text = resources.files("loupe.data").joinpath("coco_to_imagenet.json").read_text()
        source = "coco_to_imagenet.json"
    else:
        source = os.fspath(path)
        try:
            with open(path) as handle:
                text = handle.read()
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{source}: class mapping file not found") from error
    try:
        table = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{source}: not valid JSON ({error})") from error
    if not isinstance(table, dict) or not all(
        isinstance(v, list) and all(isinstance(i, int) and i >= 0 for i in v)
        for v in table.values()
    ):
        raise ValueError(f"{source}: expected {{class name: [non-negative indices]}}")
    return table


def class_mapping(
    class_names: Sequence[str],
    table: Mapping[str, Sequence[int]],
    num_model_classes: int | None = None,
) -> ClassMapping:
    """The mapping aligned with a data set's ``class_names`` (names absent from ``table``, such
    as ``background``, get the empty set). Every name of ``table`` must be a data-set class
    (catches typos); indices are checked against ``num_model_classes`` when given."""
    unknown = sorted(set(table) - set(class_names))
    if unknown:
        raise ValueError(f"class mapping names not in the data set's classes: {unknown}")
    for name, indices in table.items():
        if num_model_classes is not None and any(
            not 0 <= i < num_model_classes for i in indices
        ):
            raise ValueError(
                f"class mapping for {name!r} has indices outside 0..{num_model_classes - 1}"
            )
    return tuple(tuple(sorted(set(table.get(name, ())))) for name in class_names)


def _members(mapping: ClassMapping, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C_data, S)`` padded classifier indices and ``(C_data, S)`` validity."""
    width = max((len(s) for s in mapping), default=0) or 1
    index = torch.zeros(len(mapping), width, dtype=torch.long)
    valid = torch.zeros(len(mapping), width, dtype=torch.bool)
    for row, members in enumerate(mapping):
        index[row, : len(members)] = torch.tensor(members, dtype=torch.long)
        valid[row, : len(members)] = True
    return index.to(device), valid.to(device)


def _best_members(
    logits: torch.Tensor, mapping: ClassMapping
) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C_model), got {tuple(logits.shape)}")
    if len(mapping) == 0:
        raise ValueError("empty class mapping")
    index, valid = _members(mapping, logits.device)
    if int(index.max()) >= logits.shape[1]:
        raise ValueError(
            f"class mapping refers to classifier class {int(index.max())} but logits have "
            f"{logits.shape[1]} classes"
        )
    batch = logits.shape[0]
    picked = logits.gather(1, index.flatten().expand(batch, -1)).view(batch, *index.shape)
    picked = picked.masked_fill(~valid, float("-inf"))
    scores, position = picked.max(dim=2)
    best = index.gather(1, position.T).T.where(valid.any(1), torch.full_like(position, -1))
    return scores, best


def mapped_scores(logits: torch.Tensor, mapping: ClassMapping) -> torch.Tensor:
    """``(B, C_data)``: for each data-set class, the max of ``logits (B, C_model)`` over its
    classifier classes; ``-inf`` for classes with an empty set (background, no counterpart)."""
    return _best_members(logits, mapping)[0]


def mapped_targets(
    logits: torch.Tensor, mapping: ClassMapping, present: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, C_data)`` long: for each image and data-set class, the best-scoring classifier
    class of the class's set; ``-1`` where the set is empty or ``present (B, C_data)`` (e.g.
    the image-level labels) is 0. Pass it as ``targets`` to :func:`loupe.explain`: map ``k``
    of image ``b`` is then the map of data-set class ``k``."""
    best = _best_members(logits, mapping)[1]
    if present is not None:
        if present.shape != best.shape:
            raise ValueError(
                f"present must be (B, C_data) = {tuple(best.shape)}, got {tuple(present.shape)}"
            )
        best = best.where(present.to(best.device).bool(), torch.full_like(best, -1))
    return best


SHIPPED_CLASS_MAP = "coco_to_imagenet"
"""The ``--class-map`` word for the shipped COCO -> ImageNet table."""


def load_class_map(
    class_map: str, class_names: Sequence[str], num_model_classes: int | None = None
) -> ClassMapping:
    """What ``--class-map`` names (:data:`SHIPPED_CLASS_MAP` or a JSON file ``{data-set class
    name: [classifier indices]}``), aligned with ``class_names`` by :func:`class_mapping`.

    The shipped table covers all 80 COCO classes, so a data set with some of them (feral-cats:
    ``cat``) uses the entries it has; a ValueError when it has none. A user's file must name
    only data-set classes (a typo check)."""
    table = load_name_table(None if class_map == SHIPPED_CLASS_MAP else class_map)
    if class_map == SHIPPED_CLASS_MAP:
        table = {name: indices for name, indices in table.items() if name in class_names}
        if not table:
            raise ValueError(f"{class_map}: no class of the data set has an entry")
    return class_mapping(class_names, table, num_model_classes)


def has_background(class_names: Sequence[str]) -> bool:
    """True when class 0 of a data set is its background (segmentation sets): named
    ``background`` or ``bg``, in any case, with or without surrounding underscores and spaces
    (``"__background__"``, ``"_background_"``). A background is never an image-level label."""
    first = next(iter(class_names), "")
    return first.strip().strip("_").lower() in ("background", "bg")


def offset_mapping(num_dataset_classes: int, num_outputs: int, offset: int) -> ClassMapping:
    """Data-set class ``c`` <-> classifier output ``c - offset`` where that output exists."""
    return tuple(
        (c - offset,) if 0 <= c - offset < num_outputs else () for c in range(num_dataset_classes)
    )


def class_correspondence(
    class_names: Sequence[str],
    num_outputs: int | None,
    *,
    model_offset: int | None = None,
    class_map: str | None = None,
    label_offset: int | None = None,
) -> tuple[ClassMapping, dict[str, object]]:
    """The mapping from data-set classes to the outputs of a classifier, and how it was chosen.

    In order: ``class_map`` (:func:`load_class_map`); ``label_offset`` (output ``k`` is
    data-set class ``k + offset``); the offset the model records (``model_offset``, a loupe
    run's ``label_offset``); else inferred from the counts: 1 when the model has one output
    per non-background class, 0 when one per class. Errors name the option."""
    if num_outputs is None:
        raise ValueError("cannot tell how many outputs the model has (no classifier weight)")
    if class_map is not None and label_offset is not None:
        raise ValueError("give --class-map or --label-offset, not both")
    if class_map is not None:
        mapping = load_class_map(class_map, class_names, num_outputs)
        if not any(mapping):
            raise ValueError(f"--class-map {class_map}: no data-set class has a counterpart")
        return mapping, {"class_map": class_map}
    offset = label_offset if label_offset is not None else model_offset
    if offset is None:
        offset = _inferred_offset(class_names, num_outputs)
    if offset < 0:
        raise ValueError(f"--label-offset must be >= 0, got {offset}")
    mapping = offset_mapping(len(class_names), num_outputs, offset)
    if not any(mapping):
        raise ValueError(f"--label-offset {offset} leaves no data-set class a classifier "
                         f"output ({num_outputs} outputs, {len(class_names)} classes)")
    return mapping, {"label_offset": offset}


def _inferred_offset(class_names: Sequence[str], num_outputs: int) -> int:
    n = len(class_names)
    background = has_background(class_names)
    if background and num_outputs == n - 1:
        return 1
    if num_outputs == n:
        return 0
    raise ValueError(
        f"the model has {num_outputs} outputs and the data set {n} classes "
        f"({'with' if background else 'without'} background); say how they correspond with "
        "--class-map (e.g. coco_to_imagenet) or --label-offset"
    )
