"""masks_from_maps / confident_masks against hand-worked pixels and IRN's numpy rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loupe.masks import confident_masks, masks_from_maps, normalize_by_max


def irn_masks(maps: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """IRN's step/eval_cam.py rule, in numpy: ReLU, divide by the max, pad the background
    score in front, argmax, look the index up in the keys (0 = background)."""
    cams = np.maximum(maps.astype(np.float32), 0)
    peak = cams.max(axis=(1, 2), keepdims=True)
    cams = np.where(peak > 0, cams / np.where(peak > 0, peak, 1), 0).astype(np.float32)
    cams = np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=np.float32(threshold))
    keys = np.pad(classes, (1, 0))
    return keys[np.argmax(cams, axis=0)]


def test_hand_worked_pixels():
    # map A [2, 1, 0, -1] -> [1, .5, 0, 0]; map B [0, 3, 3, 0] -> [0, 1, 1, 0]
    maps = torch.tensor([[[2.0, 1.0, 0.0, -1.0]], [[0.0, 3.0, 3.0, 0.0]]])
    classes = torch.tensor([3, 7])
    assert masks_from_maps(maps, classes, 0.5).tolist() == [[3, 7, 7, 0]]
    # a score equal to the threshold stays background (background wins ties)
    assert masks_from_maps(maps, classes, 1.0).tolist() == [[0, 0, 0, 0]]
    assert masks_from_maps(maps, classes, 0.0).tolist() == [[3, 7, 7, 0]]


def test_equal_maps_first_class_wins_and_padding_never_wins():
    same = torch.tensor([[[1.0, 2.0]]])
    maps = torch.cat([same, same, 10 * same])
    classes = torch.tensor([4, 9, -1])  # the padding map is largest but must not win
    assert masks_from_maps(maps, classes, 0.1).tolist() == [[4, 4]]


def test_normalisation_clamps_negatives_and_zero_maps():
    maps = torch.tensor([[[-3.0, 0.0], [1.0, 4.0]], [[-1.0, -2.0], [0.0, 0.0]]])
    out = normalize_by_max(maps)
    assert out.tolist() == [[[0.0, 0.0], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]


@pytest.mark.parametrize("seed", range(5))
def test_matches_irn_numpy_rule_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    # small integer values: many ties between maps and with the thresholds (k / 4)
    maps = torch.randint(-1, 5, (3, 9, 11), generator=generator).float()
    classes = torch.tensor([2, 5, 11])
    for threshold in (0.0, 0.25, 0.5, 0.6, 0.75, 1.0):
        expected = irn_masks(maps.numpy(), classes.numpy(), threshold)
        got = masks_from_maps(maps, classes, threshold)
        assert got.dtype == torch.long
        np.testing.assert_array_equal(got.numpy(), expected)


def test_batched_equals_per_image():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 2, 6, 5, generator=generator)
    classes = torch.tensor([[1, 2], [3, -1], [5, 6], [7, 8]])
    batched = masks_from_maps(maps, classes, 0.4)
    for i in range(4):
        assert torch.equal(batched[i], masks_from_maps(maps[i], classes[i], 0.4))


def test_no_maps_is_all_background():
    maps = torch.zeros(0, 3, 4)
    assert masks_from_maps(maps, torch.zeros(0, dtype=torch.long), 0.2).eq(0).all()


def test_confident_masks_hand_worked():
    # normalised scores [1, .5, .2, .05, 0]
    maps = torch.tensor([[[1.0, 0.5, 0.2, 0.05, 0.0]]])
    classes = torch.tensor([6])
    out = confident_masks(maps, classes, fg=0.5, bg=0.1)
    assert out.tolist() == [[6, 6, 255, 0, 0]]


def test_errors_are_clear():
    maps = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="one label per map"):
        masks_from_maps(maps, torch.tensor([1, 2, 3]), 0.2)
    with pytest.raises(ValueError, match="int tensor"):
        masks_from_maps(maps, torch.tensor([1.0, 2.0]), 0.2)
    with pytest.raises(ValueError, match="float tensor"):
        masks_from_maps(maps.long(), torch.tensor([1, 2]), 0.2)
    with pytest.raises(ValueError, match="bg .* must not exceed fg"):
        confident_masks(maps, torch.tensor([1, 2]), fg=0.2, bg=0.5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_stays_on_device():
    maps = torch.rand(2, 4, 4, device="cuda")
    out = masks_from_maps(maps, torch.tensor([1, 2], device="cuda"), 0.3)
    assert out.device.type == "cuda"
    assert torch.equal(out.cpu(), masks_from_maps(maps.cpu(), torch.tensor([1, 2]), 0.3))


def test_inputs_are_not_modified():
    maps = torch.tensor([[[float("nan"), -1.0, 2.0]], [[0.5, 0.0, 1.0]]])
    classes = torch.tensor([1, -1])
    before = maps.clone(), classes.clone()
    masks_from_maps(maps, classes, 0.3)
    confident_masks(maps, classes, 0.5, 0.1)
    assert torch.equal(maps.nan_to_num(7.0), before[0].nan_to_num(7.0))
    assert torch.equal(classes, before[1])
