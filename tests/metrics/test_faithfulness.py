"""Faithfulness metrics: exact values on hand-built models and maps, properties (batch and
chunk invariance, seeds, several targets, no hooks left, modes restored) and errors."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import loupe.metrics._scoring as faithfulness_scoring
from loupe import explain
from loupe.metrics.faithfulness import (
    Scorer,
    box_regions,
    cascade_layers,
    cascading_randomization,
    confidence_change,
    deletion_curves,
    energy_pointing_game,
    insertion_curves,
    linear_imputation,
    noisy_linear_imputation,
    pixel_ranks,
    pointing_game,
    road,
    spearman,
)
from tests.conftest import count_hooks
from tests.metrics.faith_models import distinct_maps, images, tiny_cnn

W = torch.tensor([[4.0, 3.0], [2.0, 1.0]])


def linear_model(weights: torch.Tensor) -> nn.Module:
    """logits = [sum(w * x), 0] for one-channel images the size of ``weights``."""
    linear = nn.Linear(weights.numel(), 2, bias=False)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0] = weights.flatten()
    return nn.Sequential(nn.Flatten(), linear).eval()


# --- deletion / insertion ---------------------------------------------------------------------

def test_deletion_and_insertion_by_hand():
    """Ranks 4 > 3 > 2 > 1; deleting to 0 leaves 10, 6, 3, 1, 0; inserting gives 0, 4, 7, 9,
    10; trapezoids of width 1/4: 3.75 and 6.25."""
    model, x = linear_model(W), torch.ones(1, 1, 2, 2)
    deletion = deletion_curves(model, x, W[None], 0, steps=4, score="logit")
    insertion = insertion_curves(model, x, W[None], 0, steps=4, baseline=0.0, score="logit")
    assert deletion.fractions.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert deletion.scores[0, 0].tolist() == [10, 6, 3, 1, 0]
    assert insertion.scores[0, 0].tolist() == [0, 4, 7, 9, 10]
    assert deletion.auc.item() == pytest.approx(3.75)
    assert insertion.auc.item() == pytest.approx(6.25)


def test_deletion_steps_cover_uneven_pixel_counts():
    """5x5 = 25 pixels in 4 steps: 7 pixels a step, the last one shorter."""
    model, x = linear_model(torch.arange(25.0)), torch.ones(1, 1, 5, 5)
    curves = deletion_curves(model, x, torch.arange(25.0).view(1, 5, 5), 0, steps=4,
                             score="logit")
    assert (curves.fractions * 25).round().tolist() == [0, 7, 14, 21, 25]
    top = torch.arange(25.0).flip(0)
    assert curves.scores[0, 0].tolist() == [300, 300 - top[:7].sum(), 300 - top[:14].sum(),
                                            300 - top[:21].sum(), 0]


def test_constant_and_tensor_baselines():
    model, x = linear_model(W), torch.ones(1, 1, 2, 2)
    full = deletion_curves(model, x, W[None], 0, steps=4, baseline=2.0, score="logit")
    assert full.scores[0, 0, -1].item() == pytest.approx(20.0)  # everything is 2
    tensor = deletion_curves(model, x, W[None], 0, steps=4, baseline=torch.tensor(2.0),
                             score="logit")
    torch.testing.assert_close(tensor.scores, full.scores)


# --- average drop / increase in confidence ----------------------------------------------------

def test_confidence_by_hand():
    """Y = 10; the map normalised is (w - 1) / 3, so O = 4 + 2 + 2/3 = 20/3 and the drop is
    (10 - 20/3) / 10 = 1/3; no increase."""
    model, x = linear_model(W), torch.ones(1, 1, 2, 2)
    change = confidence_change(model, x, W[None] * 7 + 5, 0, score="logit")  # any range
    assert change.clean.item() == pytest.approx(10)
    assert change.explained.item() == pytest.approx(20 / 3)
    assert change.average_drop.item() == pytest.approx(1 / 3)
    assert change.increase_in_confidence.item() == 0.0


def test_average_drop_undefined_without_confidence():
    model, x = linear_model(-W), torch.ones(1, 1, 2, 2)  # Y = -10
    assert torch.isnan(confidence_change(model, x, W[None], 0, score="logit").average_drop).all()


# --- ROAD -------------------------------------------------------------------------------------

def test_linear_imputation_by_hand():
    """Centre: the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal); corner: of
    its 3 neighbours, renormalised by 1/6 + 1/6 + 1/12 = 5/12."""
    x = torch.arange(9.0).view(1, 1, 3, 3) ** 2
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    v = x[0, 0]
    expected = (v[0, 1] + v[1, 0] + v[1, 2] + v[2, 1]) / 6 + (
        v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]) / 12
    assert linear_imputation(x, centre)[0, 0, 1, 1].item() == pytest.approx(expected.item())
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True
    expected = (v[0, 1] / 6 + v[1, 0] / 6 + v[1, 1] / 12) / (5 / 12)
    assert linear_imputation(x, corner)[0, 0, 0, 0].item() == pytest.approx(expected.item())


def test_noise_only_on_removed_pixels_and_seeded():
    x = images(2, 12)
    removed = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(0)) < 0.4
    clean = linear_imputation(x, removed)
    noisy = noisy_linear_imputation(x, removed, noise=0.5,
                                    generator=torch.Generator().manual_seed(3))
    draws = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(noisy - clean, 0.5 * draws * removed[:, None])


def test_road_removes_by_rank_by_hand():
    """3x3, one pixel removed at fraction 0.2: MoRF imputes the top pixel (the centre),
    LeRF the bottom one (a corner); the score is sum(w * x) after imputation."""
    weights = torch.arange(1.0, 10.0).view(3, 3)
    model = linear_model(weights)
    x = (torch.arange(9.0).view(1, 1, 3, 3) - 3) ** 2
    saliency = torch.tensor([[0.0, 1, 2], [3, 9, 4], [5, 6, 7]])  # centre top, (0,0) bottom
    scores = road(model, x, saliency[None], 0, fractions=(0.2,), noise=0.0, score="logit")
    morf_mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    morf_mask[0, 1, 1] = True
    lerf_mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    lerf_mask[0, 0, 0] = True
    for mask, value in ((morf_mask, scores.morf), (lerf_mask, scores.lerf)):
        expected = (linear_imputation(x, mask)[0, 0] * weights).sum()
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert scores.combined.item() == pytest.approx((scores.lerf - scores.morf).item() / 2)


def test_road_seeded_noise():
    model, x, maps = tiny_cnn(), images(2, 16), distinct_maps(2, 16)
    first = road(model, x, maps, fractions=(0.3, 0.7), seed=4)
    again = road(model, x, maps, fractions=(0.3, 0.7), seed=4)
    other = road(model, x, maps, fractions=(0.3, 0.7), seed=5)
    torch.testing.assert_close(first.morf, again.morf, rtol=0, atol=0)
    assert not torch.equal(first.morf, other.morf)


# --- ranks ------------------------------------------------------------------------------------

def test_ranks_break_ties_by_seed_only():
    maps = torch.tensor([[[1.0, 1.0], [1.0, 5.0]]])  # (1, 2, 2) -> ranks (1, 4)
    a, b = pixel_ranks(maps, 0), pixel_ranks(maps, 0)
    assert torch.equal(a, b) and a[0, 3] == 0
    assert sorted(a[0, :3].tolist()) == [1, 2, 3]
    orders = {tuple(pixel_ranks(maps, s)[0].tolist()) for s in range(20)}
    assert len(orders) > 1  # ties really are broken at random
    distinct = torch.tensor([[[0.3, 0.1], [0.2, 0.0]]])
    assert pixel_ranks(distinct, 0).tolist() == pixel_ranks(distinct, 9).tolist() == [[0, 2, 1, 3]]


# --- pointing games ---------------------------------------------------------------------------

def test_pointing_game_by_hand():
    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 0, 0] = 1.0
    region = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    region[0, 0, 0, 3] = True  # 3 pixels to the right of the peak
    assert pointing_game(maps, region, tolerance=2).item() == 0.0
    assert pointing_game(maps, region, tolerance=3).item() == 1.0
    region[0, 0] = False
    region[0, 0, 3, 4] = True  # distance 5 (3-4-5)
    assert pointing_game(maps, region, tolerance=4.9).item() == 0.0
    assert pointing_game(maps, region, tolerance=5).item() == 1.0
    assert torch.isnan(pointing_game(maps, torch.zeros_like(region))).all()


def test_pointing_game_first_peak_and_resize():
    maps = torch.zeros(1, 4, 4)
    maps[0, 1, 2] = maps[0, 3, 0] = 1.0  # two peaks: (1, 2) comes first in raster order
    region = torch.zeros(1, 4, 4, dtype=torch.bool)
    region[0, 3, 0] = True
    assert pointing_game(maps, region, tolerance=0).item() == 0.0
    region[0, 1, 2] = True
    assert pointing_game(maps, region, tolerance=0).item() == 1.0
    small = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])  # upsampled: the peak is in the top right
    big = torch.zeros(1, 8, 8, dtype=torch.bool)
    big[0, :4, 4:] = True
    assert pointing_game(small, big, tolerance=0).item() == 1.0


def test_energy_pointing_game_by_hand():
    maps = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]])  # normalised: 0, 0.25, 0.5, 1
    region = torch.tensor([[[False, True], [False, True]]])
    assert energy_pointing_game(maps, region).item() == pytest.approx(1.25 / 1.75)
    flat = torch.full((1, 2, 2), 3.0)  # constant: uniform, the region's area
    assert energy_pointing_game(flat, region).item() == pytest.approx(0.5)
    assert torch.isnan(energy_pointing_game(maps, torch.zeros_like(region))).all()


def test_box_regions_inclusive_union():
    boxes = torch.tensor([[0, 0, 1, 0], [3, 2, 3, 3], [2, 2, 1, 1]])  # last is empty
    region = box_regions(boxes, 4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 0:2] = True
    expected[2:4, 3] = True
    assert torch.equal(region, expected)
    assert box_regions(boxes[None, None], 4, 4).shape == (1, 1, 4, 4)


# --- sanity check -----------------------------------------------------------------------------

def test_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 30), generator=generator).float()
    b = a + torch.randint(0, 3, (4, 30), generator=generator).float()
    expected = [spearmanr(a[i], b[i]).statistic for i in range(4)]
    torch.testing.assert_close(spearman(a, b), torch.tensor(expected, dtype=torch.float64))
    assert spearman(torch.ones(1, 5), b[:1, :5]).item() == 0.0


def test_randomization_of_a_linear_model_by_hand():
    """Saliency of a linear model is |w_c|; after re-initialising the linear layer with seed
    s it is |w'_c| with w' what nn.Linear.reset_parameters draws after manual_seed(s)."""
    weights = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(1))
    model = linear_model(weights)
    x = torch.randn(2, 1, 4, 4)
    before = [p.clone() for p in model.parameters()]
    result = cascading_randomization(model, x, 0, method="saliency", seed=7)
    assert result.layers == ("1",) and result.stages == (0,)
    fresh = nn.Linear(16, 2, bias=False)
    torch.manual_seed(7)
    fresh.reset_parameters()
    expected = spearmanr(weights.abs().flatten(), fresh.weight[0].detach().abs()).statistic
    torch.testing.assert_close(result.correlations[0, :, 0],
                               torch.full((2,), expected, dtype=torch.float32))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_cascade_order_stages_and_no_side_effects():
    model, x = tiny_cnn(), images(2, 16)
    model.train()
    hooks = count_hooks(model)
    assert cascade_layers(model, x) == ["head", "features.2", "features.0"]
    every = cascading_randomization(model, x, method="gradcam", seed=3)
    last = cascading_randomization(model, x, method="gradcam", seed=3, every_stage=False)
    assert every.correlations.shape == (3, 2, 1) and last.stages == (2,)
    torch.testing.assert_close(every.correlations[-1], last.correlations[0])
    maps = explain(model, x, None, method="gradcam")
    given = cascading_randomization(model, x, method="gradcam", seed=3, every_stage=False,
                                    reference_maps=maps)
    torch.testing.assert_close(given.correlations, last.correlations)
    assert model.training and count_hooks(model) == hooks
    assert (every.correlations.abs() <= 1 + 1e-6).all()


# --- properties -------------------------------------------------------------------------------

def _all_metrics(model, x, maps, targets=None, chunk_size=16):
    scorer = Scorer(model, x, targets, chunk_size=chunk_size)
    return torch.cat([
        deletion_curves(model, x, maps, scorer=scorer, steps=5).scores.flatten(1),
        insertion_curves(model, x, maps, scorer=scorer, steps=5).scores.flatten(1),
        road(model, x, maps, scorer=scorer, fractions=(0.25, 0.75)).morf.flatten(1),
        road(model, x, maps, scorer=scorer, fractions=(0.25, 0.75)).lerf.flatten(1),
        confidence_change(model, x, maps, scorer=scorer).explained,
    ], dim=1)


def test_batch_and_chunk_invariance():
    model, x, maps = tiny_cnn(), images(3, 16), distinct_maps(3, 16)
    together = _all_metrics(model, x, maps, chunk_size=7)
    alone = torch.cat([_all_metrics(model, x[i:i + 1], maps[i:i + 1], chunk_size=1)
                       for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_default_chunk_follows_the_image_size(monkeypatch):
    model = tiny_cnn()
    assert Scorer(model, images(2, 16)).chunk_size == 32  # small images: the largest chunk
    assert Scorer(model, torch.zeros(1, 3, 224, 224)).chunk_size == 4  # as Score-CAM's
    assert Scorer(model, images(2, 16), chunk_size=5).chunk_size == 5
    sizes = []
    real = faithfulness_scoring.perturb_chunk_size
    monkeypatch.setattr(faithfulness_scoring, "perturb_chunk_size",
                        lambda chunk, x: sizes.append(chunk) or real(chunk, x))
    x, maps = images(2, 16), distinct_maps(2, 16)
    deletion_curves(model, x, maps, steps=3)
    assert sizes == [None]  # the public metrics leave it to the scorer


def test_several_targets_with_padding():
    model, x = tiny_cnn(), images(2, 16)
    maps = torch.stack([distinct_maps(2, 16, seed=3), distinct_maps(2, 16, seed=4)], dim=1)
    targets = [[1, 3], [2]]  # the second image's second target is padding
    values = deletion_curves(model, x, maps, targets, steps=4).auc
    assert torch.isnan(values[1, 1]) and not torch.isnan(values[[0, 0, 1], [0, 1, 0]]).any()
    single = deletion_curves(model, x[:1], maps[:1, 1], [3], steps=4).auc
    torch.testing.assert_close(values[0, 1], single[0, 0])


def test_hooks_and_modes_restored_after_an_error():
    model, x, maps = tiny_cnn(), images(2, 16), distinct_maps(2, 16)
    model.train()
    hooks = count_hooks(model)

    def broken(output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        deletion_curves(model, x, maps, broken, score="logit")
    assert model.training and count_hooks(model) == hooks
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_values_on_cuda():
    model, x, maps = tiny_cnn(), images(2, 16), distinct_maps(2, 16)
    cpu = _all_metrics(model, x, maps)
    gpu = _all_metrics(model.cuda(), x.cuda(), maps.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, s: deletion_curves(m, x, s, score="soft"), "score must be one of"),
        (lambda m, x, s: deletion_curves(m, x, s, chunk_size=0), "chunk_size must be"),
        (lambda m, x, s: deletion_curves(m, x, s, steps=0), "steps must be"),
        (lambda m, x, s: deletion_curves(m, x, s, baseline="mean"), "baseline must be"),
        (lambda m, x, s: deletion_curves(m, x, s, baseline=torch.zeros(5)), "must broadcast"),
        (lambda m, x, s: insertion_curves(m, x, s, blur_sigma=0), "blur_sigma must be"),
        (lambda m, x, s: deletion_curves(m, x, s[0]), "maps must be a tensor"),
        (lambda m, x, s: deletion_curves(m, x, s[:1]), "maps cover 1 images"),
        (lambda m, x, s: deletion_curves(m, x, s, [[0, 1], [1, 2]]), "one map per target"),
        (lambda m, x, s: deletion_curves(m, x, s * float("nan")), "maps contain NaN"),
        (lambda m, x, s: deletion_curves(m, x[0], s), "images must be a 4D tensor"),
        (lambda m, x, s: deletion_curves(m, x, s, seed=0.5), "seed must be an int"),
        (lambda m, x, s: deletion_curves(m, x, s, lambda o: o[:, 0]), "score='probability'"),
        (lambda m, x, s: road(m, x, s, fractions=(0.5, 1.0)), "fractions must be"),
        (lambda m, x, s: road(m, x, s, noise=-1), "noise must be"),
        (lambda m, x, s: road(m, x, s, tol=0), "tol must lie"),
        (lambda m, x, s: pointing_game(s, s > 0.5, tolerance=-1), "tolerance must be"),
        (lambda m, x, s: pointing_game(s, (s > 0.5)[:1]), "one region per map"),
        (lambda m, x, s: energy_pointing_game(s, s[0] > 0), "regions must be"),
        (lambda m, x, s: box_regions(torch.zeros(3), 4, 4), "boxes must be"),
        (lambda m, x, s: linear_imputation(x, torch.ones(2, 16, 16, dtype=torch.bool)),
         "all removed"),
        (lambda m, x, s: cascading_randomization(m, x, layers=["nope"]), "does not exist"),
        (lambda m, x, s: cascading_randomization(m, x, layers=[]), "at least one block"),
        (lambda m, x, s: cascading_randomization(m, x, reference_maps=s), "reference_maps"),
    ],
)
def test_errors(call, message):
    model, x, maps = tiny_cnn(), images(2, 16), distinct_maps(2, 16)
    with pytest.raises(ValueError, match=message) as info:
        call(model, x, maps)
    assert "\n" not in str(info.value)
