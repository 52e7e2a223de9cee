"""CAM's ILSVRC localization protocol against hand-built maps and boxes: the 20%-of-max box
rule, the authors' loose/tight box generator, the heuristic's five guesses, and the top-1 /
top-5 localization error (ILSVRC's eval_clsloc rule)."""

from __future__ import annotations

import pytest
import torch

from loupe.metrics import box_from_map
from loupe.metrics.boxes import EMPTY_BOX
from loupe.metrics.localization import (
    GuessRecord,
    cam_box,
    cam_box_candidates,
    guess_ious,
    heuristic_guesses,
    image_errors,
    localization_errors,
    loose_and_tight_boxes,
)


def test_cam_box_is_twenty_percent_of_the_maximum_not_of_the_range():
    scoremap = torch.full((20, 30), -10.0)
    scoremap[2:8, 3:12] = 10.0  # the object: 6 x 9 pixels
    scoremap[12:18, 20:28] = 1.5  # a weak bump: above -6 (20% of the range), below 2
    assert cam_box(scoremap).tolist() == [3, 2, 11, 7]
    # wsolevaluation's rule (20% of the min-max range) also takes the weak bump as a
    # component; the object is still the larger one, so lower the object's size to see it
    scoremap[2:4, 3:6] = 10.0
    scoremap[4:8, 3:12] = -10.0
    scoremap[2:4, 6:12] = -10.0
    assert cam_box(scoremap).tolist() == [3, 2, 5, 3]  # only the object is above 2
    assert box_from_map(scoremap, 0.2).tolist() == [20, 12, 27, 17]  # the bump is larger
    # any positive scale gives the same box; other thresholds are fractions of the maximum
    assert cam_box(scoremap * 7).tolist() == [3, 2, 5, 3]
    assert cam_box(scoremap, 0.1).tolist() == [20, 12, 27, 17]  # 1.5 > 0.1 * 10


def test_cam_box_takes_the_largest_component_and_is_empty_without_a_positive_value():
    scoremap = torch.zeros(10, 10)
    scoremap[0:2, 0:2] = 1.0  # 4 pixels, the maximum
    scoremap[5:9, 4:9] = 0.5  # 20 pixels
    assert cam_box(scoremap).tolist() == [4, 5, 8, 8]
    assert cam_box(torch.full((4, 4), -1.0)).tolist() == list(EMPTY_BOX)
    assert cam_box(torch.zeros(4, 4)).tolist() == list(EMPTY_BOX)
    with pytest.raises(ValueError, match="fraction of the map's maximum"):
        cam_box(scoremap, 1.5)
    with pytest.raises(ValueError, match="must be 2D"):
        cam_box(torch.zeros(1, 4, 4))


def plateau_and_core(core: tuple[slice, slice]) -> torch.Tensor:
    """A 64 x 64 map: a 40 x 40 plateau at 0.2 of the maximum, a core at the maximum."""
    scoremap = torch.zeros(64, 64)
    scoremap[10:50, 12:52] = 0.2
    scoremap[core] = 1.0
    return scoremap


def test_generator_gives_a_loose_and_a_tight_box():
    # thresholds 20, 100, 110 of 255 (0.078, 0.39, 0.43): the plateau is on at the first only
    scoremap = plateau_and_core((slice(20, 30), slice(22, 34)))
    boxes = cam_box_candidates(scoremap)
    # the core's box appears at 0.39 and at 0.43: the second one is a duplicate
    assert boxes.tolist() == [[12, 10, 51, 49], [22, 20, 33, 29]]
    loose, tight = loose_and_tight_boxes(scoremap).tolist()
    assert loose == [12, 10, 51, 49] and tight == [22, 20, 33, 29]


def test_generator_drops_a_box_overlapping_a_larger_one_by_more_than_half():
    # a core of 30 x 30 = 900 pixels inside the 1600-pixel plateau: 900 > 800, a duplicate
    scoremap = plateau_and_core((slice(12, 42), slice(14, 44)))
    assert cam_box_candidates(scoremap).tolist() == [[12, 10, 51, 49]]
    loose, tight = loose_and_tight_boxes(scoremap).tolist()
    assert tight == loose == [12, 10, 51, 49]


def test_generator_erodes_thin_parts_relative_to_the_largest_distance():
    scoremap = torch.zeros(64, 64)
    scoremap[10:50, 10:50] = 1.0  # largest distance to the background 20
    scoremap[30, 50:60] = 1.0  # a one-pixel line: distance 1 -> 255 / 20 = 12.75 > 10, kept
    assert cam_box_candidates(scoremap).tolist() == [[10, 10, 59, 49]]
    scoremap = torch.zeros(100, 100)
    scoremap[5:95, 5:75] = 1.0  # largest distance 35: a distance of 1 scales to 7, dropped
    scoremap[50, 75:90] = 1.0
    # the line goes, and so does the rectangle's one-pixel rim (distance 1 too)
    assert cam_box_candidates(scoremap).tolist() == [[6, 6, 73, 93]]
    # the paper's simple rule does not erode: the line widens its box
    assert cam_box(scoremap).tolist() == [5, 5, 89, 94]


def test_generator_without_a_positive_value_gives_empty_boxes():
    assert cam_box_candidates(torch.zeros(8, 8)).shape == (0, 4)
    assert loose_and_tight_boxes(torch.zeros(8, 8)).tolist() == [list(EMPTY_BOX)] * 2


def test_heuristic_guesses_are_two_boxes_for_the_first_two_classes_one_for_the_third():
    first = plateau_and_core((slice(20, 30), slice(22, 34)))
    second = torch.zeros(64, 64)
    second[0:5, 0:6] = 1.0
    third = plateau_and_core((slice(20, 30), slice(22, 34))).flip(-1)
    classes, boxes = heuristic_guesses(torch.tensor([3, 7, 1, 9]), [first, second, third, None])
    assert classes.tolist() == [3, 3, 7, 7, 1]
    assert boxes.tolist() == [
        [12, 10, 51, 49], [22, 20, 33, 29],  # c1 loose, c1 tight
        [0, 0, 5, 4], [0, 0, 5, 4],  # c2: one box only, so tight = loose
        [12, 10, 51, 49],  # c3 loose (the flipped plateau spans 12..51 too)
    ]
    classes, boxes = heuristic_guesses(torch.tensor([4]), [None])
    assert classes.tolist() == [4, 4] and boxes.tolist() == [list(EMPTY_BOX)] * 2


GT = torch.tensor([[0, 0, 9, 9]])  # 100 pixels


def box(y1: int, x1: int = 9) -> list[int]:
    """A box (0, 0, x1, y1) inside GT: IoU = its area / 100."""
    return [0, 0, x1, y1]


def test_guess_ious_by_hand():
    classes = torch.tensor([2, 5, 2])
    boxes = torch.tensor([box(5), box(9), box(2)])  # IoU 0.6, 1.0, 0.3
    match, iou = guess_ious(classes, boxes, 2, torch.cat([GT, torch.tensor([[0, 0, 9, 2]])]))
    assert match.tolist() == [True, False, True]
    # the best of the class's two boxes counts; another class's guess scores 0
    assert iou.tolist() == pytest.approx([0.6, 0.0, 1.0])
    match, iou = guess_ious(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), 2, GT)
    assert match.numel() == iou.numel() == 0


def record(classes: list[int], boxes: list[list[int]], label: int,
           heuristic: tuple[list[int], list[list[int]]] | None = None) -> GuessRecord:
    match, iou = guess_ious(torch.tensor(classes), torch.tensor(boxes), label, GT)
    extra = None
    if heuristic is not None:
        _, extra = guess_ious(torch.tensor(heuristic[0]), torch.tensor(heuristic[1]), label, GT)
    return GuessRecord(match, iou, extra)


def test_top1_and_top5_localization_error_by_hand():
    other = box(9)
    # A: the class is the second guess, well placed: a top-5 hit, a top-1 miss
    a = [record([5, 2, 6, 7, 8], [other, box(5), other, other, other], 2)]
    # B: the class is the first guess but its box has IoU 0.3: misses localization, not
    # classification
    b = [record([1, 3, 4, 6, 7], [box(2), other, other, other, other], 1)]
    # C: two classes; the first guess localizes class 1 (IoU 0.7), the second class 4 (0.6)
    c = [record([1, 4, 2, 3, 5], [box(6), box(5), other, other, other], 1),
         record([1, 4, 2, 3, 5], [box(6), box(5), other, other, other], 4)]
    # D: a class never guessed
    d = [record([1, 2, 3, 4, 5], [other] * 5, 9)]
    assert [image_errors(r, 1) for r in (a, b, c, d)] == [1.0, 1.0, 0.5, 1.0]
    assert [image_errors(r, 5) for r in (a, b, c, d)] == [0.0, 1.0, 0.0, 1.0]
    assert [image_errors(r, 1, boxes=False) for r in (a, b, c, d)] == [1.0, 0.0, 0.5, 1.0]
    result = localization_errors([a, b, c, d, []])  # the image without classes is left out
    assert result["images"] == 4 and result["pairs"] == 5
    assert result["top1_loc_error"] == pytest.approx(3.5 / 4)
    assert result["top5_loc_error"] == pytest.approx(2 / 4)
    assert result["top1_cls_error"] == pytest.approx(2.5 / 4)
    assert result["top5_cls_error"] == pytest.approx(1 / 4)
    assert result["top5_loc_error_heuristic"] is None
    # a stricter IoU: C's second class (0.6) and A (0.6) fail at 0.65
    strict = localization_errors([a, b, c, d], iou=0.65)
    assert strict["top5_loc_error"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_top5_figures_need_five_guesses():
    a = [record([2], [box(5)], 2)]
    result = localization_errors([a], max_k=1)
    assert result["top1_loc_error"] == 0.0
    assert result["top5_loc_error"] is None and result["top5_cls_error"] is None


def test_heuristic_error_by_hand():
    other = box(9)
    guesses = ([1, 1, 3, 3, 4], [box(2), box(6), other, other, other])  # c1 loose 0.3, tight 0.7
    b = [record([1, 3, 4, 6, 7], [box(2), other, other, other, other], 1, guesses)]
    wrong = ([5, 5, 6, 6, 7], [box(9)] * 5)
    d = [record([5, 6, 7, 8, 3], [other] * 5, 9, wrong)]
    result = localization_errors([b, d], heuristic=True)
    assert result["top5_loc_error"] == 1.0  # B's only box of class 1 is the loose one
    assert result["top5_loc_error_heuristic"] == 0.5  # its tight box localizes
    assert localization_errors([b, d], heuristic=True, max_k=2)["top5_loc_error_heuristic"] \
        is None


def test_localization_errors_reject_bad_input():
    with pytest.raises(ValueError, match="IoU threshold must lie in"):
        localization_errors([[record([1], [box(5)], 1)]], iou=0.0)
    with pytest.raises(ValueError, match="no image with a ground-truth class"):
        localization_errors([[], []])
    with pytest.raises(ValueError, match="no heuristic guesses"):
        localization_errors([[record([1], [box(5)], 1)]], heuristic=True)
