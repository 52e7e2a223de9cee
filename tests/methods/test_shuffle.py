"""Shuffle saliency: the index maths against a tile-loop reference, and the method against
plain autograd, permutation-invariant models, seeds, batches, chunks, bases and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import loupe
from loupe.api import MapContext
from loupe.hooks import hooked
from loupe.layers import tokens_to_grid
from loupe.methods._tiles import (
    cyclic_round,
    draw_rounds,
    identity_round,
    padded_round,
    shuffle_images,
    unshuffle_maps,
)
from loupe.methods.shuffle import gaussian_blur
from loupe.targets import resolve_targets
from tests.conftest import count_hooks

# ---------------------------------------------------------------- reference implementations


def reference_tile_swap(canvas: torch.Tensor, grid: int, tile: tuple[int, int], perm):
    """Swap tiles of ``(C, Hc, Wc)`` with a Python loop over tiles (the obvious way)."""
    th, tw = tile
    out = canvas.clone()
    for t, s in enumerate(perm):
        (oy, ox), (sy, sx) = divmod(t, grid), divmod(s, grid)
        out[:, oy * th : (oy + 1) * th, ox * tw : (ox + 1) * tw] = canvas[
            :, sy * th : (sy + 1) * th, sx * tw : (sx + 1) * tw
        ]
    return out


def reference_cyclic(image: torch.Tensor, grid: int, dy: int, dx: int, perm) -> torch.Tensor:
    h, w = image.shape[-2:]
    rolled = torch.roll(image, shifts=(-dy, -dx), dims=(-2, -1))
    return reference_tile_swap(rolled, grid, (h // grid, w // grid), perm)


def reference_padded(image: torch.Tensor, grid: int, dy: int, dx: int, perm, value=None):
    """F.pad (reflect, or a constant ``value``) to g equal tiles with the image at (dy, dx)."""
    h, w = image.shape[-2:]
    th, tw = math.ceil((h + dy) / grid), math.ceil((w + dx) / grid)
    pads = (dx, grid * tw - w - dx, dy, grid * th - h - dy)
    if value is None:
        canvas = F.pad(image[None], pads, mode="reflect")[0]
    else:
        canvas = F.pad(image[None], pads, value=value)[0]
    return reference_tile_swap(canvas, grid, (th, tw), perm)


def distinct_image(channels: int, h: int, w: int) -> torch.Tensor:
    return torch.arange(channels * h * w, dtype=torch.float64).view(channels, h, w) + 1


# ---------------------------------------------------------------- index maths


@st.composite
def round_parameters(draw):
    h, w = draw(st.integers(1, 37)), draw(st.integers(1, 37))
    grid = draw(st.integers(1, min(h, w, 5)))
    offset = draw(st.sampled_from(["cyclic", "pad"]))
    span_y, span_x = (h, w) if offset == "cyclic" else (math.ceil(h / grid), math.ceil(w / grid))
    dy, dx = draw(st.integers(0, span_y - 1)), draw(st.integers(0, span_x - 1))
    perm = draw(st.permutations(range(grid * grid)))
    return h, w, grid, dy, dx, list(perm), offset


@settings(max_examples=300, deadline=None)
@given(round_parameters())
def test_shuffle_and_unshuffle_are_exact_inverses_and_match_the_tile_loop(params):
    h, w, grid, dy, dx, perm, offset = params
    image = distinct_image(2, h, w)
    if offset == "cyclic":
        round_ = cyclic_round(h, w, grid, dy, dx, perm)
        expected = reference_cyclic(image, grid, dy, dx, perm)
        # a bijection of pixel positions: every pixel seen exactly once
        assert torch.equal(round_.source.sort().values, torch.arange(h * w))
    else:
        round_ = padded_round(h, w, grid, dy, dx, perm)
        expected = reference_padded(image, grid, dy, dx, perm)
    shuffled = shuffle_images(image, round_)
    assert torch.equal(shuffled, expected)
    assert torch.equal(unshuffle_maps(shuffled, round_, (h, w)), image)
    assert torch.equal(round_.source[round_.placement], torch.arange(h * w))
    assert round_.placement.unique().numel() == h * w


@settings(max_examples=100, deadline=None)
@given(round_parameters().filter(lambda p: p[-1] == "pad"))
def test_pad_mode_input_holds_every_pixel_once_plus_only_padding(params):
    h, w, grid, dy, dx, perm, _ = params
    image = distinct_image(1, h, w)
    round_ = padded_round(h, w, grid, dy, dx, perm)
    shuffled = shuffle_images(image, round_)
    # Mark image pixels with 1 and padding with 0 (constant padding in the reference), then
    # swap tiles: exactly H*W marked positions, holding each image pixel once, at placement.
    marks = reference_padded(torch.ones(1, h, w, dtype=torch.float64), grid, dy, dx, perm, 0.0)
    inside = marks.flatten().nonzero().squeeze(1)
    assert inside.numel() == h * w
    assert torch.equal(inside, round_.placement.sort().values)
    assert torch.equal(shuffled.flatten()[round_.placement], image.flatten())
    # everything else is padding: reflected copies, as F.pad(mode="reflect") makes them
    reflected = reference_padded(image, grid, dy, dx, perm)
    assert torch.equal(shuffled, reflected)
    assert math.ceil((h + dy) / grid) * grid - h - dy < grid  # no more padding than needed


def test_draw_rounds_depends_only_on_seed_and_size():
    def draw(seed, offset="cyclic"):
        gen = torch.Generator().manual_seed(seed)
        return draw_rounds(29, 31, 6, (2, 3, 4), jitter=True, offset=offset, generator=gen)

    a, b, c = draw(0), draw(0), draw(1)
    assert all(torch.equal(x.source, y.source) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x.source, y.source) for x, y in zip(a, c, strict=True))
    assert {r.grid for r in draw(3) + draw(4) + draw(5)} <= {2, 3, 4}
    for round_ in draw(0):  # cyclic: a permutation of the pixels every round
        assert torch.equal(round_.source.sort().values, torch.arange(29 * 31))
    offsets = {(r.dy, r.dx) for seed in range(4) for r in draw(seed, "pad")}
    assert len(offsets) > 1 and all(dy < math.ceil(29 / 2) for dy, _ in offsets)


def test_rounds_built_together_equal_each_round_built_alone():
    """draw_rounds builds the cyclic rounds of one grid in one batch (cyclic_rounds); each
    must be the round cyclic_round builds from the same parameters (itself checked against
    the tile-by-tile reference above)."""
    gen = torch.Generator().manual_seed(7)
    rounds = draw_rounds(23, 26, 17, (1, 2, 3, 5), jitter=True, offset="cyclic", generator=gen)
    assert len({r.grid for r in rounds}) > 2
    for r in rounds:
        alone = cyclic_round(23, 26, r.grid, r.dy, r.dx, r.tile_perm)
        assert torch.equal(r.source, alone.source) and torch.equal(r.placement, alone.placement)
        assert torch.equal(r.source[r.placement], torch.arange(23 * 26))


def test_without_jitter_the_grid_sits_at_the_top_left():
    gen = torch.Generator().manual_seed(0)
    rounds = draw_rounds(20, 20, 5, (2, 4), jitter=False, offset="cyclic", generator=gen)
    assert all(r.dy == 0 and r.dx == 0 for r in rounds)


# ---------------------------------------------------------------- models


def resnet(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=num_classes).eval()


class Pointwise(nn.Module):
    """1x1 convs and pointwise nonlinearities, global average pooling, linear: the output is
    invariant to any permutation of the pixels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 1), nn.Softplus(), nn.Conv2d(8, 8, 1), nn.Tanh()
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((-2, -1)))


class TinyNet(nn.Module):
    """A small conv net with a GAP + linear head (not permutation invariant)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((-2, -1)))


def input_gradients(model: nn.Module, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Plain autograd: d logit[classes[b]] / d images, (B, C, H, W)."""
    x = images.detach().clone().requires_grad_(True)
    out = model(x)
    out[torch.arange(len(classes)), torch.tensor(classes)].sum().backward()
    return x.grad


def vanilla_saliency(model: nn.Module, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
    return input_gradients(model, images, classes).abs().amax(1, keepdim=True)


# ---------------------------------------------------------------- the method


def test_registered_as_stochastic_input_method():
    spec = loupe.get_method("shuffle")
    assert (spec.uses_layer, spec.stochastic) == (False, True)


def test_one_identity_round_is_vanilla_saliency_exactly():
    model, x = resnet(), torch.randn(2, 3, 32, 30)
    maps = loupe.explain(
        model, x, [3, 5], method="shuffle", smooth=0.0, n_shuffles=1, grids=(1,), jitter=False
    )
    assert torch.equal(maps, vanilla_saliency(model, x, [3, 5]))


@pytest.mark.parametrize("reduce", ["l2", "grad-x-input"])
def test_identity_round_reductions_by_hand(reduce):
    model, x = TinyNet(), torch.randn(2, 3, 20, 20)
    maps = loupe.explain(
        model, x, [1, 2], method="shuffle", smooth=0.0, n_shuffles=1, grids=(1,), jitter=False,
        reduce=reduce,
    )
    grad = input_gradients(model, x, [1, 2])
    expected = grad.norm(dim=1) if reduce == "l2" else (grad * x).sum(1)
    torch.testing.assert_close(maps, expected[:, None], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("offset", ["cyclic", "pad"])
def test_maps_are_the_mean_of_unshuffled_gradients_by_hand(offset):
    """Every round by hand: shuffle with a reference tile loop, plain autograd, move every
    pixel back with a Python loop over pixel positions, mean over rounds."""
    model, x = TinyNet(), torch.randn(2, 3, 13, 11)
    classes = [1, 3]
    maps = loupe.explain(
        model, x, classes, method="shuffle", n_shuffles=5, offset=offset, seed=7,
        include_original=True,
    )
    gen = torch.Generator().manual_seed(7)
    rounds = draw_rounds(13, 11, 5, (2, 3, 4), jitter=True, offset=offset, generator=gen)
    expected = vanilla_saliency(model, x, classes)[:, 0].clone()
    for r in rounds:
        make = reference_cyclic if offset == "cyclic" else reference_padded
        shuffled = torch.stack([make(img, r.grid, r.dy, r.dx, r.tile_perm) for img in x])
        sal = input_gradients(model, shuffled, classes).abs().amax(1)
        # the canvas position of image pixel (i, j), found by tracing an image of pixel ids
        ids = make(distinct_image(1, 13, 11), r.grid, r.dy, r.dx, r.tile_perm)[0]
        for i in range(13):
            for j in range(11):
                pixel_id = i * 11 + j + 1
                hits = (ids == pixel_id).nonzero()
                if offset == "pad":  # reflected copies share the id; take the interior one
                    interior = reference_padded(
                        torch.ones(1, 13, 11, dtype=torch.float64), r.grid, r.dy, r.dx,
                        r.tile_perm, 0.0,
                    )[0]
                    hits = hits[interior[hits[:, 0], hits[:, 1]] == 1]
                assert hits.shape[0] == 1
                expected[:, i, j] += sal[:, hits[0, 0], hits[0, 1]]
    expected /= len(rounds) + 1
    torch.testing.assert_close(maps, expected[:, None], rtol=1e-5, atol=1e-7)


def test_permutation_invariant_model_gives_vanilla_saliency_for_any_t():
    model, x = Pointwise(), torch.randn(2, 3, 30, 27)
    vanilla = vanilla_saliency(model, x, [0, 4])
    for n in (1, 3, 8):
        maps = loupe.explain(model, x, [0, 4], method="shuffle", smooth=0.0, n_shuffles=n, seed=n)
        torch.testing.assert_close(maps, vanilla, rtol=1e-5, atol=1e-8)


def test_permutation_invariant_model_in_pad_mode_is_vanilla_scaled_by_image_share():
    """In pad mode the model also sees the padding: global average pooling divides by the
    canvas area, so each round's gradient is the vanilla one times H*W / (Hc*Wc)."""
    model, x = Pointwise(), torch.randn(2, 3, 30, 27)
    maps = loupe.explain(model, x, [0, 4], method="shuffle", smooth=0.0, n_shuffles=6,
                         offset="pad", seed=3, include_original=False)
    gen = torch.Generator().manual_seed(3)
    rounds = draw_rounds(30, 27, 6, (2, 3, 4), jitter=True, offset="pad", generator=gen)
    share = sum(30 * 27 / (r.canvas[0] * r.canvas[1]) for r in rounds) / len(rounds)
    assert share < 1
    vanilla = vanilla_saliency(model, x, [0, 4])
    torch.testing.assert_close(maps, vanilla * share, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(maps, vanilla, rtol=1e-3)


class Recorder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("offset", ["cyclic", "pad"])
def test_model_sees_every_pixel_once_per_round(offset):
    image = distinct_image(3, 14, 17).float()[None] / 1000
    model = Recorder(TinyNet())
    loupe.explain(model, image, 1, method="shuffle", n_shuffles=6, offset=offset, chunk_size=1,
                  include_original=False)
    shuffled = model.inputs  # given classes need no clean forward
    assert len(shuffled) == 6
    model.inputs = []
    loupe.explain(
        model, image, None, method="shuffle", n_shuffles=6, offset=offset, include_original=False
    )
    assert torch.equal(model.inputs[0], image)  # top-1 is bound on the unshuffled image first
    gen = torch.Generator().manual_seed(0)
    rounds = draw_rounds(14, 17, 6, (2, 3, 4), jitter=True, offset=offset, generator=gen)
    canvases = [r.canvas for r in rounds]  # rounds run grouped by canvas size (stable)
    ordered = sorted(rounds, key=lambda r: canvases.index(r.canvas))
    for seen, r in zip(shuffled, ordered, strict=True):
        assert torch.equal(seen[0], shuffle_images(image[0], r))
        assert torch.equal(seen[0].flatten(1)[:, r.placement], image[0].flatten(1))
        if offset == "cyclic":  # nothing but the image's pixels, each once
            assert torch.equal(seen.flatten(2).sort(-1).values, image.flatten(2))
        else:  # the image's pixels once each, and padding
            assert seen.shape[-2] * seen.shape[-1] > 14 * 17


def test_same_seed_same_maps_whatever_batch_and_chunk_size():
    model, x = TinyNet(), torch.randn(3, 3, 21, 19)
    targets = [[3, 0], [1, 2], [2, -1]]
    for offset in ("cyclic", "pad"):
        options = dict(method="shuffle", n_shuffles=4, offset=offset, seed=11)
        whole = loupe.explain(model, x, targets, chunk_size=100, **options)
        for chunk in (1, 4):
            torch.testing.assert_close(
                loupe.explain(model, x, targets, chunk_size=chunk, **options), whole,
                rtol=1e-5, atol=1e-8,
            )
        for b in range(3):
            alone = loupe.explain(model, x[b : b + 1], [targets[b]], chunk_size=5, **options)
            torch.testing.assert_close(alone, whole[b : b + 1], rtol=1e-5, atol=1e-8)
        assert whole[2, 1].abs().max() == 0  # padding target -> zero map


def test_different_seeds_give_different_maps_and_generator_matches_seed():
    model, x = TinyNet(), torch.randn(1, 3, 20, 20)
    a = loupe.explain(model, x, 3, method="shuffle", n_shuffles=4, seed=0)
    b = loupe.explain(model, x, 3, method="shuffle", n_shuffles=4, seed=1)
    assert not torch.allclose(a, b, rtol=1e-2)
    gen = torch.Generator().manual_seed(1)
    c = loupe.explain(model, x, 3, method="shuffle", n_shuffles=4, generator=gen)
    torch.testing.assert_close(b, c, rtol=0, atol=0)
    assert not torch.allclose(a, vanilla_saliency(model, x, [3]), rtol=1e-2)


def test_top1_is_the_class_of_the_unshuffled_image():
    model, x = TinyNet(), torch.randn(2, 3, 20, 20)
    top1 = model(x).argmax(1).tolist()
    auto = loupe.explain(model, x, None, method="shuffle", n_shuffles=3)
    given_ = loupe.explain(model, x, top1, method="shuffle", n_shuffles=3)
    assert torch.equal(auto, given_)


def test_multi_label_maps_equal_each_target_alone():
    model, x = resnet(), torch.randn(2, 3, 32, 32)
    both = loupe.explain(model, x, [[3, 7], [5, 1]], method="shuffle", n_shuffles=3)
    first = loupe.explain(model, x, [3, 5], method="shuffle", n_shuffles=3)
    second = loupe.explain(model, x, [7, 1], method="shuffle", n_shuffles=3)
    torch.testing.assert_close(both, torch.cat([first, second], 1), rtol=1e-5, atol=1e-8)


def test_score_function_targets():
    """grad-x-input is linear in the gradient, so the map of the score out[:, 3] - out[:, 2]
    is the map of class 3 minus the map of class 2 (same shuffles)."""
    model, x = TinyNet(), torch.randn(2, 3, 20, 20)
    options = dict(method="shuffle", n_shuffles=3, reduce="grad-x-input")
    by_function = loupe.explain(model, x, lambda out: out[:, 3] - out[:, 2], **options)
    three, two = (loupe.explain(model, x, k, **options) for k in (3, 2))
    assert by_function.shape == (2, 1, 20, 20)
    torch.testing.assert_close(by_function, three - two, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("reduce", ["abs-max", "l2", "grad-x-input"])
@pytest.mark.parametrize("offset", ["cyclic", "pad"])
def test_all_zero_image_gives_finite_maps(reduce, offset):
    maps = loupe.explain(
        TinyNet(), torch.zeros(2, 3, 20, 20), [1, 2], method="shuffle", n_shuffles=3,
        reduce=reduce, offset=offset, smooth=0.05,
    )
    assert maps.shape == (2, 1, 20, 20) and torch.isfinite(maps).all()


def test_smooth_is_a_gaussian_blur_like_torchvision():
    from torchvision.transforms.v2.functional import gaussian_blur as tv_blur

    model, x = TinyNet(), torch.randn(2, 3, 24, 30)
    raw = loupe.explain(model, x, [1, 2], method="shuffle", smooth=0.0, n_shuffles=3)
    # sigma is a fraction of the shorter side: 0.0625 * 24 = 1.5 pixels
    smoothed = loupe.explain(model, x, [1, 2], method="shuffle", n_shuffles=3, smooth=0.0625)
    expected = tv_blur(raw, kernel_size=[11, 11], sigma=[1.5, 1.5])
    torch.testing.assert_close(smoothed, expected, rtol=1e-5, atol=1e-8)
    tiny = gaussian_blur(torch.rand(1, 1, 3, 4), 2.0)  # radius > image: replicate border
    assert tiny.shape == (1, 1, 3, 4) and torch.isfinite(tiny).all()


def test_base_gradcam_shape_identity_and_by_hand():
    model, x = TinyNet(), torch.randn(2, 3, 20, 18)
    targets = [[3, 0], [1, 2]]
    maps = loupe.explain(
        model, x, targets, method="shuffle", smooth=0.0, base="gradcam", n_shuffles=3,
        include_original=False
    )
    assert maps.shape == (2, 2, 20, 18) and torch.isfinite(maps).all()
    assert count_hooks(model) == 0
    # one identity round is Grad-CAM itself
    identity = loupe.explain(
        model, x, targets, method="shuffle", smooth=0.0, base="gradcam", n_shuffles=1, grids=(1,),
        jitter=False,
    )
    torch.testing.assert_close(
        identity, loupe.explain(model, x, targets, method="gradcam"), rtol=1e-5, atol=1e-7
    )
    # real shuffles: Grad-CAM of each shuffled image, un-shuffled, averaged
    gen = torch.Generator().manual_seed(0)
    rounds = draw_rounds(20, 18, 3, (2, 3, 4), jitter=True, offset="cyclic", generator=gen)
    per_round = [
        unshuffle_maps(
            loupe.explain(model, shuffle_images(x, r), targets, method="gradcam"), r, (20, 18)
        )
        for r in rounds
    ]
    torch.testing.assert_close(maps, torch.stack(per_round).mean(0), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(maps, identity, rtol=1e-2)


def test_base_gradcam_on_resnet18_gives_b_k_h_w():
    model, x = resnet(), torch.randn(2, 3, 48, 48)
    maps = loupe.explain(
        model, x, [[3, 7], [5, 1]], method="shuffle", base="gradcam", n_shuffles=2,
        offset="pad",
    )
    assert maps.shape == (2, 2, 48, 48) and torch.isfinite(maps).all()
    assert count_hooks(model) == 0


def test_base_cam_shape():
    if "cam" not in loupe.list_methods():
        pytest.skip("the 'cam' method is not registered yet (loupe/methods/cam.py)")
    model, x = resnet(), torch.randn(2, 3, 48, 48)
    targets = [[3, 7], [5, 1]]
    maps = loupe.explain(model, x, targets, method="shuffle", smooth=0.0, base="cam", n_shuffles=2)
    assert maps.shape == (2, 2, 48, 48) and torch.isfinite(maps).all()
    identity = loupe.explain(
        model, x, targets, method="shuffle", smooth=0.0, base="cam", n_shuffles=1, grids=(1,),
        jitter=False
    )
    expected = loupe.explain(model, x, targets, method="cam")
    torch.testing.assert_close(identity, expected, rtol=1e-5, atol=1e-6)


def test_base_with_an_explicit_target_layer():
    model, x = TinyNet(), torch.randn(1, 3, 16, 16)
    spec = loupe.get_method("shuffle")

    def run(layer):
        with hooked(model) as captured:
            ctx = MapContext(
                model, x, resolve_targets(3, 1, x.device), None, captured, tokens_to_grid
            )
            return spec.function(ctx, base="gradcam", target_layer=layer, n_shuffles=2)

    first, last = run("features.1"), run("features.3")
    assert first.shape == last.shape == (1, 1, 16, 16)
    assert not torch.allclose(first, last)
    torch.testing.assert_close(last, run(None))  # found automatically: the last feature map


def test_autocast_runs_close_to_float32():
    model, x = TinyNet(), torch.randn(2, 3, 24, 24)
    full = loupe.explain(model, x, [0, 1], method="shuffle", n_shuffles=4)
    amp = loupe.explain(model, x, [0, 1], method="shuffle", n_shuffles=4, autocast=True)
    assert amp.dtype == torch.float32 and torch.isfinite(amp).all()
    cosine = F.cosine_similarity(full.flatten(1), amp.flatten(1), dim=1)
    assert (cosine > 0.98).all()
    # and autocast really ran: bfloat16 rounding (8-bit mantissa) shows, unlike float32's
    relative = (amp - full).abs().amax() / full.abs().amax()
    assert relative > 1e-3


def test_nothing_left_behind_after_an_error_in_a_shuffled_forward():
    class FailsLater(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.calls = TinyNet(), 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return self.net(x)

    model = FailsLater().train()
    x = torch.randn(1, 3, 16, 16)
    before = x.clone()
    with pytest.raises(RuntimeError, match="boom"):
        loupe.explain(model, x, 1, method="shuffle", base="gradcam", n_shuffles=4, chunk_size=1)
    assert count_hooks(model) == 0 and model.training and model.net.features[0].training
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(x, before) and not x.requires_grad


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_shuffles": 0}, "n_shuffles must be an int >= 1"),
        ({"n_shuffles": 2.5}, "n_shuffles must be an int >= 1"),
        ({"grids": ()}, "grids must be a non-empty sequence of ints"),
        ({"grids": (2, 0)}, "grids (2, 0) contains 0"),
        ({"grids": (2, 40)}, "grid g needs 1 <= g <= min(H, W) = 32"),
        ({"offset": "wrap"}, "offset must be one of ('cyclic', 'pad'), got 'wrap'"),
        ({"reduce": "max"}, "reduce must be one of"),
        ({"chunk_size": 0}, "chunk_size must be an int >= 1"),
        ({"seed": "a"}, "seed must be an int"),
        ({"generator": 3}, "generator must be a torch.Generator"),
        ({"smooth": -1.0}, "smooth must be a Gaussian sigma as a fraction"),
        ({"smooth": 9}, "in [0, 0.5] (e.g. 0.04); got 9"),
        ({"score": "logits"}, "score must be one of logit, log-softmax, logit-minus-mean"),
        ({"weight": "prob"}, "weight must be one of none, softmax, sigmoid, top-k"),
        ({"top_k": 0}, "top_k must be an int >= 1"),
        ({"accumulate": "max"}, "accumulate must be one of mean, square, var"),
        ({"base": "gradcam", "score": "log-softmax"}, "score='log-softmax' applies to base="),
        ({"base": "gradcam", "weight": "softmax"}, "weight='softmax' applies to base="),
        ({"base": "nope"}, "base must be 'gradient' or a registered method: unknown method"),
        ({"base": "shuffle"}, "base='shuffle' would shuffle shuffled images"),
        ({"base": "gradcam", "reduce": "l2"}, "reduce='l2' applies to base='gradient' only"),
        ({"base_options": {"x": 1}}, "base_options are for a map method base"),
    ],
)
def test_bad_options_raise_clear_errors(options, message):
    with pytest.raises(ValueError) as error:
        loupe.explain(TinyNet(), torch.randn(1, 3, 32, 32), 0, method="shuffle", **options)
    assert message in str(error.value)


def test_identity_round_helper():
    r = identity_round(3, 4)
    x = torch.rand(2, 3, 4)
    assert torch.equal(shuffle_images(x, r), x) and torch.equal(unshuffle_maps(x, r, (3, 4)), x)


def test_default_smoothing_is_the_dev_screenings_choice():
    """The default ``smooth`` is 0.02 of the shorter side (issue 10's decision rule 1): the
    default maps are the unsmoothed ones blurred by that Gaussian, not the raw maps."""
    from loupe.methods._scores import smooth_maps

    model, x = TinyNet(), torch.randn(1, 3, 40, 30)
    default = loupe.explain(model, x, [1], method="shuffle", n_shuffles=2)
    raw = loupe.explain(model, x, [1], method="shuffle", n_shuffles=2, smooth=0.0)
    torch.testing.assert_close(default, smooth_maps(raw, 0.02), rtol=1e-5, atol=1e-9)
    assert not torch.allclose(default, raw)
