"""Shared pieces: Sample collation, mask reading and checks, labels from masks, the factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from loupe.data import (
    DATASET_KINDS,
    Sample,
    collate_samples,
    labels_from_mask,
    list_dataset_kinds,
    open_dataset,
    read_index_mask,
)
from loupe.data.base import check_mask_size, multi_hot, read_class_names, read_id_list

from .layouts import block_mask, write_mask


def test_labels_from_mask_excludes_background_and_ignore() -> None:
    mask = torch.tensor([[0, 3, 3], [255, 5, 0]])
    assert labels_from_mask(mask, 6).tolist() == [0, 0, 0, 1, 0, 1]
    assert labels_from_mask(torch.zeros(2, 2, dtype=torch.long), 4).tolist() == [0, 0, 0, 0]


def test_multi_hot() -> None:
    assert multi_hot([2, 0], 4).tolist() == [1, 0, 1, 0]
    assert multi_hot([], 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("mode", ["P", "L"])
def test_read_index_mask_keeps_indices(tmp_path, mode) -> None:
    values = block_mask([(3, 0, 4, 0, 4), (255, 4, 5, 0, 16), (20, 10, 16, 10, 16)])
    write_mask(tmp_path / "m.png", values, mode=mode)
    mask = read_index_mask(tmp_path / "m.png", 21)
    assert mask.dtype == torch.long and mask.shape == (16, 16)
    assert torch.equal(mask, torch.from_numpy(values.astype(np.int64)))


def test_read_index_mask_rejects_labels_outside_class_set(tmp_path) -> None:
    write_mask(tmp_path / "m.png", block_mask([(21, 0, 2, 0, 2), (255, 5, 6, 5, 6)]))
    with pytest.raises(ValueError, match=r"m\.png: mask has labels \[21\] outside.*0\.\.20"):
        read_index_mask(tmp_path / "m.png", 21)


def test_read_index_mask_rejects_rgb_and_unreadable(tmp_path) -> None:
    Image.new("RGB", (4, 4), (128, 0, 0)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png: mask has mode 'RGB'"):
        read_index_mask(tmp_path / "rgb.png", 21)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad\.png: cannot read mask"):
        read_index_mask(tmp_path / "bad.png", 21)
    with pytest.raises(FileNotFoundError):
        read_index_mask(tmp_path / "missing.png", 21)


def test_check_mask_size_names_file_and_sizes() -> None:
    check_mask_size(torch.zeros(3, 5), (5, 3), "a.jpg", "a")
    with pytest.raises(ValueError, match=r"a\.jpg: mask of 'a' is 5x3 .* image is 3x5"):
        check_mask_size(torch.zeros(3, 5), (3, 5), "a.jpg", "a")


def test_read_id_list_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.txt: split file not found"):
        read_id_list(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match=r"empty\.txt: empty split file"):
        read_id_list(tmp_path / "empty.txt")
    (tmp_path / "ids.txt").write_text("a 1\n\nb\n")
    assert read_id_list(tmp_path / "ids.txt") == ["a", "b"]
    (tmp_path / "names.txt").write_text("")
    with pytest.raises(ValueError, match="class-names file is empty"):
        read_class_names(tmp_path / "names.txt")


def _sample(i: int, size: int = 4, image: object = None) -> Sample:
    return Sample(
        id=str(i),
        image=torch.full((3, size, size), float(i)) if image is None else image,
        labels=torch.tensor([0.0, 1.0, float(i % 2)]),
        mask=torch.full((size, size), i, dtype=torch.long),
        boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]]) if i else None,
        box_labels=torch.tensor([1]) if i else None,
    )


def test_collate_stacks_equal_shapes() -> None:
    batch = collate_samples([_sample(0), _sample(1)])
    assert batch.ids == ["0", "1"] and len(batch) == 2
    assert batch.images.shape == (2, 3, 4, 4) and batch.images[1].eq(1).all()
    assert batch.labels.tolist() == [[0, 1, 0], [0, 1, 1]]
    assert batch.masks.shape == (2, 4, 4) and batch.masks.dtype == torch.long
    assert batch.boxes[0] is None and batch.boxes[1].shape == (1, 4)


def test_collate_keeps_lists_for_ragged_or_pil() -> None:
    batch = collate_samples([_sample(0, 4), _sample(1, 5)])
    assert isinstance(batch.images, list) and isinstance(batch.masks, list)
    pil = collate_samples([_sample(0, image=Image.new("RGB", (2, 2)))])
    assert isinstance(pil.images, list)
    no_masks = collate_samples([Sample("a", None, torch.zeros(2))])
    assert no_masks.masks is None and no_masks.images == [None]
    with pytest.raises(ValueError, match="no samples"):
        collate_samples([])


def test_open_dataset_kinds_and_unknown_kind(tmp_path) -> None:
    assert list_dataset_kinds() == ["coco", "folder", "ilsvrc", "voc", "voc-boxes", "wsol", "yolo"]
    assert set(DATASET_KINDS) == set(list_dataset_kinds())
    with pytest.raises(TypeError):
        DATASET_KINDS["x"] = None  # read-only
    with pytest.raises(ValueError, match="unknown data set kind 'pascal'; choose one of: coco"):
        open_dataset("pascal", tmp_path, "train")
