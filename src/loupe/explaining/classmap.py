"""``loupe explain --class-map``: data-set classes over a classifier's classes.

As in ``loupe maps``, ``--class-map`` is ``coco_to_imagenet`` (the shipped table) or a JSON
file ``{data-set class name: [classifier indices]}`` (:func:`loupe.data.mapping.load_name_table`).
For ``explain`` the table's names are the data-set classes: ``--target cat`` explains, in each
image, the best-scoring classifier class of the set of ``cat`` (:func:`loupe.data.mapping.
mapped_targets`, the rule ``loupe maps`` uses), and without ``--target`` the ``--topk`` data-set
classes with the best such scores are explained. Outputs and their record name the data-set
class (``photo.gradcam.cat.npz``, ``"dataset_class": "cat"``) beside the classifier class.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from loupe.data.mapping import SHIPPED_CLASS_MAP, ClassMapping, class_mapping, load_name_table


@dataclass(frozen=True)
class DatasetClasses:
    """The data-set classes of a ``--class-map``: ``names`` in the table's order, ``mapping``
    (for each name, its classifier classes, sorted) and ``source`` (the option's value)."""

    source: str
    names: tuple[str, ...]
    mapping: ClassMapping
    sha256: str

    def find(self, text: str) -> int | None:
        """The index of the data-set class named ``text`` (case-insensitive), or None."""
        key = text.strip().lower()
        hits = [i for i, name in enumerate(self.names) if name.lower() == key]
        return hits[0] if hits else None

    def settings(self) -> dict[str, str]:
        """What ``explain.json`` records of the map: its source and the sha256 of its table."""
        return {"source": self.source, "sha256": self.sha256}


def load_dataset_classes(class_map: str, num_outputs: int | None) -> DatasetClasses:
    """The :class:`DatasetClasses` of ``--class-map`` for a classifier of ``num_outputs``
    classes; a ValueError naming the option when an index is out of range or no class has a
    classifier class (a FileNotFoundError when the file is missing)."""
    table = load_name_table(None if class_map == SHIPPED_CLASS_MAP else class_map)
    names = tuple(table)
    try:
        mapping = class_mapping(names, table, num_outputs)
    except ValueError as error:
        raise ValueError(f"--class-map {class_map}: {error}") from None
    if not any(mapping):
        raise ValueError(f"--class-map {class_map}: no class lists a classifier class")
    labels = [file_label(name) for name in names]
    clash = next((n for n, label in zip(names, labels, strict=True) if labels.count(label) > 1),
                 None)
    if clash is not None:
        raise ValueError(f"--class-map {class_map}: two class names give the file name "
                         f"{file_label(clash)!r}; rename one")
    canonical = json.dumps({k: sorted(set(v)) for k, v in table.items()}, sort_keys=True)
    return DatasetClasses(class_map, names, mapping,
                          hashlib.sha256(canonical.encode()).hexdigest())


def file_label(name: str) -> str:
    """A data-set class name as it appears in file names: runs of characters other than
    letters, digits, ``_`` and ``-`` become ``_`` (``traffic light`` -> ``traffic_light``)."""
    return re.sub(r"[^\w-]+", "_", name.strip()) or "_"
