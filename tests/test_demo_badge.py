"""The demo's badge statistic on hand-built maps and masks, and its table."""

from __future__ import annotations

import math

import pytest
import torch

from loupe.demo import BadgeStatistic, badge_pair_shares, badge_statistic, badge_table


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """One 4x4 image: class 1 on the left half (8 px) with a 2-px badge at (0, 0) and (1, 0),
    class 2 on the right half (8 px) with its badge hidden (no badge pixel)."""
    masks = torch.tensor([[[1, 1, 2, 2]] * 4])
    badges = torch.zeros(1, 4, 4, dtype=torch.bool)
    badges[0, 0, 0] = badges[0, 1, 0] = True
    return masks, badges


def test_shares_by_hand():
    masks, badges = _scene()
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0, 0, 0] = 3.0  # class 1: 3 on the badge,
    maps[0, 0, 2, 1] = 1.0  # 1 on the body,
    maps[0, 0, 3, 3] = 4.0  # 4 outside the object (on class 2's pixels),
    maps[0, 0, 1, 1] = -5.0  # a negative score counts as no energy
    maps[0, 1] = 1.0  # class 2: no visible badge -> left out
    classes = torch.tensor([[1, 2, -1]])  # the padding column is not a pair
    shares = badge_pair_shares(maps, classes, masks, badges)
    assert shares.shape == (2, 3)
    assert shares[0].tolist() == pytest.approx([3 / 4, 2 / 8, 4 / 8])
    assert bool(shares[1].isnan().all())
    stat = badge_statistic(shares)
    assert stat == BadgeStatistic(energy_share=pytest.approx(0.75), area_share=0.25,
                                  concentration=pytest.approx(3.0), object_share=0.5, pairs=1,
                                  left_out=1)


def test_an_even_map_has_concentration_one_and_a_map_without_energy_is_left_out():
    masks, badges = _scene()
    even = torch.ones(1, 1, 4, 4)
    stat = badge_statistic(badge_pair_shares(even, torch.tensor([[1]]), masks, badges))
    assert stat.energy_share == pytest.approx(stat.area_share) == pytest.approx(0.25)
    assert stat.concentration == pytest.approx(1.0) and stat.object_share == pytest.approx(0.5)
    negative = -torch.ones(1, 1, 4, 4)
    empty = badge_statistic(badge_pair_shares(negative, torch.tensor([[1]]), masks, badges))
    assert empty.pairs == 0 and empty.left_out == 1 and math.isnan(empty.energy_share)


def test_means_are_over_pairs_and_batches_concatenate():
    masks, badges = _scene()
    a, b = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    a[0, 0, 0, 0] = 1.0  # all on the badge: share 1
    b[0, 0, 3, 0] = 1.0  # all on the body: share 0
    classes = torch.tensor([[1]])
    rows = torch.cat([badge_pair_shares(m, classes, masks, badges) for m in (a, b)])
    batched = badge_pair_shares(torch.cat([a, b]), classes.repeat(2, 1), masks.repeat(2, 1, 1),
                                badges.repeat(2, 1, 1))
    assert torch.equal(rows, batched)
    assert badge_statistic(rows).energy_share == pytest.approx(0.5)


def test_badge_table_has_a_row_per_method():
    stat = BadgeStatistic(0.5, 0.1, 5.0, 0.9, 10, 2)
    text = badge_table({"cam": stat, "saliency": stat})
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2] == "| cam | 50.0 | 10.0 | 5.00 | 90.0 | 10 |"


def test_badge_table_shows_a_dash_where_no_pair_counts():
    nothing = BadgeStatistic(*(float("nan"),) * 4, 0, 10)
    line = badge_table({"baseline-background": nothing}).splitlines()[2]
    assert line == "| baseline-background | — | — | — | — | 0 |"
