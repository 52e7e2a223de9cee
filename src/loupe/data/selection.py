"""Halves of a data set by sorted image id (``--split-by-id dev|test|all``): a held-out
protocol that needs no split file. ``dev`` is the first ``n // 2`` ids in sorted order,
``test`` the rest; ``all`` is the data set unchanged. The ids are sorted explicitly (Python's
string order), whatever order the data set lists them in, and the halves keep that sorted
order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

#: The values of ``--split-by-id``.
ID_HALVES = ("all", "dev", "test")


def half_indices(ids: Sequence[str], half: str) -> list[int]:
    """Indices into ``ids`` of the ``half`` (``dev``: the first ``n // 2`` ids in sorted
    order, ``test``: the others, ``all``: every index in the given order); dev and test are
    listed in sorted-id order."""
    if half not in ID_HALVES:
        raise ValueError(f"--split-by-id must be one of {', '.join(ID_HALVES)}, got {half!r}")
    if half == "all":
        return list(range(len(ids)))
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    cut = len(ids) // 2
    return order[:cut] if half == "dev" else order[cut:]


class IdSubset(Dataset):
    """The items ``indices`` of ``dataset`` as a data set of its own: ``ids``,
    ``class_names``, ``num_classes``, items and ``mask(i)`` (when the data set has it) are
    those of the chosen items, in the order of ``indices``."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.ids = tuple(dataset.ids[i] for i in self.indices)
        self.class_names = tuple(dataset.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return self.dataset[self.indices[index]]

    def mask(self, index: int) -> Any:
        """The ground-truth mask of item ``index`` (without reading its image when the data
        set can do that)."""
        mask_of = getattr(self.dataset, "mask", None)
        if callable(mask_of):
            return mask_of(self.indices[index])
        return self[index].mask


def select_half(dataset: Any, half: str) -> Any:
    """``dataset`` itself for ``all``, else an :class:`IdSubset` of its ``dev`` or ``test``
    half (see :func:`half_indices`); a ValueError when the half would be empty."""
    indices = half_indices(dataset.ids, half)
    if half == "all":
        return dataset
    if not indices:
        raise ValueError(f"--split-by-id {half}: the data set has {len(dataset.ids)} image(s), "
                         f"its {half} half is empty")
    return IdSubset(dataset, indices)
