"""``--split-by-id dev|test|all``: halves by sorted image id, whatever the data set's order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from loupe.data.selection import IdSubset, half_indices, select_half
from loupe.data.spec import DatasetSpec, open_spec

IDS = ["b", "e", "a", "d", "c"]  # not in sorted order


def test_dev_is_the_first_half_of_the_sorted_ids_and_test_the_rest():
    dev, test = half_indices(IDS, "dev"), half_indices(IDS, "test")
    assert [IDS[i] for i in dev] == ["a", "b"]  # n // 2 = 2
    assert [IDS[i] for i in test] == ["c", "d", "e"]
    assert sorted(dev + test) == list(range(5))
    assert half_indices(IDS, "all") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="--split-by-id must be one of all, dev, test"):
        half_indices(IDS, "val")


class _Items:
    """A data set listing its ids out of order, with items and masks that name their id."""

    def __init__(self, ids):
        self.ids = tuple(ids)
        self.class_names = ("background", "thing")
        self.mask_calls = 0

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return SimpleNamespace(id=self.ids[index], mask=torch.full((2, 2), index))

    def mask(self, index):
        self.mask_calls += 1
        return torch.full((2, 2), index)


def test_a_half_is_a_data_set_of_its_own():
    base = _Items(IDS)
    test = select_half(base, "test")
    assert isinstance(test, IdSubset) and test.ids == ("c", "d", "e") and len(test) == 3
    assert [test[i].id for i in range(3)] == ["c", "d", "e"] and test[-1].id == "e"
    assert test.class_names == base.class_names and test.num_classes == 2
    assert int(test.mask(0)[0, 0]) == IDS.index("c") and base.mask_calls == 1
    with pytest.raises(IndexError):
        test[3]
    assert select_half(base, "all") is base
    with pytest.raises(ValueError, match="--split-by-id dev: the data set has 1 image"):
        select_half(_Items(["x"]), "dev")


def test_open_spec_splits_the_synthetic_set_and_limit_counts_within_the_half():
    spec = DatasetSpec("synthetic", synthetic_train=7, synthetic_size=16)
    whole = open_spec(spec)
    dev = open_spec(DatasetSpec("synthetic", synthetic_train=7, synthetic_size=16,
                                split_by_id="dev"))
    test = open_spec(DatasetSpec("synthetic", synthetic_train=7, synthetic_size=16,
                                 split_by_id="test"))
    assert list(dev.ids) == sorted(whole.ids)[:3] and list(test.ids) == sorted(whole.ids)[3:]
    assert torch.equal(test[0].mask, whole[3].mask)
    assert DatasetSpec("synthetic").describe().get("split_by_id") is None  # old runs match
    assert DatasetSpec("synthetic", split_by_id="test").describe()["split_by_id"] == "test"
