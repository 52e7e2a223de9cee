"""Shuffle saliency's issue-10 options: class-discriminative scores, round weights, the
accumulation (mean, SmoothGrad-squared, VarGrad) and relative smoothing; by hand from the
rounds, exact cases, and seed / batch / chunk invariance for every option."""

from __future__ import annotations

import pytest
import torch

import loupe
from loupe.methods._rounds import RoundSums, round_weights
from loupe.methods._scores import class_scores, gaussian_blur
from loupe.methods._tiles import draw_rounds, identity_round, shuffle_images, unshuffle_maps
from loupe.targets import resolve_targets
from tests.methods.test_shuffle import Pointwise, TinyNet


def rounds_by_hand(model, x, classes, n, seed, score="logit", include_original=True):
    """Per-round un-shuffled saliency maps ``(R, B, H, W)`` and logits ``(R, B, N)``, with plain
    autograd on each shuffled batch (one target per image)."""
    h, w = x.shape[-2:]
    gen = torch.Generator().manual_seed(seed)
    rounds = draw_rounds(h, w, n, (2, 3, 4), jitter=True, offset="cyclic", generator=gen)
    if include_original:
        rounds.insert(0, identity_round(h, w))
    maps, logits = [], []
    for r in rounds:
        z = shuffle_images(x, r).detach().requires_grad_(True)
        out = model(z)
        picked = class_scores(out, score)[torch.arange(len(classes)), torch.tensor(classes)]
        (grad,) = torch.autograd.grad(picked.sum(), z)
        maps.append(unshuffle_maps(grad.abs().amax(1), r, (h, w)))
        logits.append(out.detach())
    return torch.stack(maps), torch.stack(logits)


def test_weighted_accumulations_by_hand():
    model, x, classes = TinyNet(), torch.randn(2, 3, 14, 13), [1, 3]
    with torch.no_grad():
        model.fc.bias.zero_()
    x[:, :, :7] += 2  # a top half that shuffles move around: the top-1 class changes
    m, z = rounds_by_hand(model, x, classes, 5, seed=4)  # (R, B, H, W), (R, B, N)
    idx = torch.tensor(classes)
    p = torch.softmax(z, -1)[:, torch.arange(2), idx]  # (R, B)
    s = torch.sigmoid(z[:, torch.arange(2), idx])
    top1 = (z.argmax(-1) == idx).float()
    # image 0: class 1 never top-1 (all rounds count); image 1: class 3 in some rounds only
    assert top1[:, 0].sum() == 0 and 0 < top1[:, 1].sum() < len(top1)

    def mean(w, values):
        w = torch.where(w.sum(0) > 0, w, torch.ones_like(w))  # nothing kept: every round
        return (w[..., None, None] * values).sum(0) / w.sum(0)[..., None, None]

    ones = torch.ones_like(p)
    cases = {
        (): mean(ones, m),
        (("weight", "softmax"),): mean(p, m),
        (("weight", "sigmoid"),): mean(s, m),
        (("weight", "top-k"), ("top_k", 1)): mean(top1, m),
        (("accumulate", "square"),): mean(ones, m**2),
        (("accumulate", "var"),): mean(ones, m**2) - mean(ones, m) ** 2,
        (("accumulate", "var"), ("weight", "softmax")): mean(p, m**2) - mean(p, m) ** 2,
    }
    for options, expected in cases.items():
        maps = loupe.explain(model, x, classes, method="shuffle", smooth=0.0, n_shuffles=5, seed=4,
                             **dict(options))
        torch.testing.assert_close(maps[:, 0], expected, rtol=1e-4, atol=1e-9, msg=str(options))


@pytest.mark.parametrize("score", ["log-softmax", "logit-minus-mean"])
def test_scores_by_hand(score):
    model, x, classes = TinyNet(), torch.randn(2, 3, 12, 12), [0, 2]
    m, _ = rounds_by_hand(model, x, classes, 4, seed=1, score=score)
    maps = loupe.explain(model, x, classes, method="shuffle", smooth=0.0, n_shuffles=4, seed=1,
                         score=score)
    torch.testing.assert_close(maps[:, 0], m.mean(0), rtol=1e-5, atol=1e-9)


def test_identity_rounds_square_is_saliency_squared_and_var_is_zero():
    model, x = TinyNet(), torch.randn(2, 3, 16, 16)
    same = dict(method="shuffle", n_shuffles=3, grids=(1,), jitter=False)
    plain = loupe.explain(model, x, [1, 2], **same)
    square = loupe.explain(model, x, [1, 2], accumulate="square", **same)
    var = loupe.explain(model, x, [1, 2], accumulate="var", **same)
    weighted = loupe.explain(model, x, [1, 2], weight="softmax", **same)
    torch.testing.assert_close(square, plain**2)
    assert var.abs().max() <= 1e-6 * plain.max() ** 2
    torch.testing.assert_close(weighted, plain)


def test_permutation_invariant_model_gives_the_scores_saliency_for_any_t():
    """Pointwise layers + GAP: every round's un-shuffled gradient is the clean one."""
    model, x = Pointwise(), torch.randn(2, 3, 15, 17)
    for score in ("log-softmax", "logit-minus-mean"):
        expected = loupe.explain(model, x, [0, 4], method="saliency", score=score)
        maps = loupe.explain(model, x, [0, 4], method="shuffle", smooth=0.0, n_shuffles=5,
                             score=score, weight="softmax")
        torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-8)


def test_top_k_without_any_recognised_round_is_the_plain_mean():
    model, x = TinyNet(), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        model.fc.bias[3] = -1e3  # class 3 is never among the top 2
        model.fc.bias[0] = 1e3  # class 0 always is
    common = dict(method="shuffle", n_shuffles=4, seed=2)
    for target in (3, 0):
        plain = loupe.explain(model, x, target, **common)
        kept = loupe.explain(model, x, target, weight="top-k", top_k=2, **common)
        torch.testing.assert_close(kept, plain, rtol=0, atol=0)


def test_round_weights_and_sums_directly():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    targets = resolve_targets([[0, 2], [1, -1]], 2, torch.device("cpu")).bind(logits)
    soft = torch.softmax(logits, 1)
    torch.testing.assert_close(round_weights(logits, targets, "softmax"),
                               torch.stack([soft[0, [0, 2]], torch.stack([soft[1, 1],
                                                                          torch.tensor(1.0)])]))
    top1 = round_weights(logits, targets, "top-k", top_k=1)
    assert top1.tolist() == [[1.0, 0.0], [1.0, 1.0]]  # padding counts 1
    assert round_weights(logits, targets, "none") is None
    # two rounds of one image, one target (class 1 of 2): softmax weights 1/4 and 3/4
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    logits[1, 1] = torch.log(torch.tensor(3.0))
    logits[0, 1] = torch.log(torch.tensor(1 / 3))
    one = resolve_targets([[1]], 1, torch.device("cpu")).of_rows(torch.tensor([0, 0]))
    sums = RoundSums(1, 1, 2, accumulate="var", weight="softmax")
    sums.add(torch.tensor([0, 0]), torch.tensor([[[1.0, 4.0]], [[3.0, 0.0]]]), logits, one)
    # weights 1/4, 3/4: mean (2.5, 1), mean of squares (7, 4) -> var (0.75, 3)
    torch.testing.assert_close(sums.result(), torch.tensor([[[0.75, 3.0]]]))


OPTIONS = [
    {"score": "log-softmax"},
    {"score": "logit-minus-mean"},
    {"weight": "softmax"},
    {"weight": "sigmoid"},
    {"weight": "top-k", "top_k": 2},
    {"accumulate": "square"},
    {"accumulate": "var", "weight": "softmax"},
    {"smooth": 0.05},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(map(str, o.values())))
def test_every_option_is_seed_batch_and_chunk_invariant(options):
    model, x = TinyNet(), torch.randn(3, 3, 15, 13)
    targets = [[3, 0], [1, 2], [2, -1]]
    common = dict(method="shuffle", n_shuffles=3, seed=5, **options)
    whole = loupe.explain(model, x, targets, chunk_size=100, **common)
    torch.testing.assert_close(loupe.explain(model, x, targets, chunk_size=1, **common), whole,
                               rtol=1e-5, atol=1e-8)
    for b in range(3):
        alone = loupe.explain(model, x[b : b + 1], [targets[b]], chunk_size=2, **common)
        torch.testing.assert_close(alone, whole[b : b + 1], rtol=1e-5, atol=1e-8)
    assert whole[2, 1].abs().max() == 0  # padding target -> zero map
    assert torch.isfinite(whole).all() and whole.shape == (3, 2, 15, 13)
    again = loupe.explain(model, x, targets, chunk_size=7, **common)
    torch.testing.assert_close(again, whole, rtol=1e-5, atol=1e-8)
    other = loupe.explain(model, x, targets, chunk_size=7, **{**common, "seed": 6})
    assert not torch.allclose(other, whole, rtol=1e-3)


def test_pad_offset_with_weights_and_smoothing():
    model, x = TinyNet(), torch.randn(2, 3, 14, 11)
    common = dict(method="shuffle", n_shuffles=4, offset="pad", seed=3, weight="softmax",
                  accumulate="square")
    raw = loupe.explain(model, x, [1, 2], **common)
    smoothed = loupe.explain(model, x, [1, 2], smooth=0.1, **common)
    torch.testing.assert_close(smoothed, gaussian_blur(raw, 1.1), rtol=1e-5, atol=1e-9)
    alone = loupe.explain(model, x[1:], [2], **common)
    torch.testing.assert_close(alone, raw[1:], rtol=1e-5, atol=1e-8)


def test_weights_need_class_targets():
    with pytest.raises(ValueError, match="weight='softmax' needs class targets"):
        loupe.explain(TinyNet(), torch.randn(1, 3, 12, 12), lambda out: out[:, 1],
                      method="shuffle", n_shuffles=2, weight="softmax")


def test_base_gradcam_takes_accumulate_and_smooth():
    model, x = TinyNet(), torch.randn(2, 3, 16, 16)
    common = dict(method="shuffle", base="gradcam", n_shuffles=1, grids=(1,), jitter=False)
    gradcam = loupe.explain(model, x, [0, 1], method="gradcam")
    square = loupe.explain(model, x, [0, 1], accumulate="square", **common)
    torch.testing.assert_close(square, gradcam**2, rtol=1e-5, atol=1e-7)


def test_top1_target_with_class_scores_is_the_clean_images_top1():
    model, x = TinyNet(), torch.randn(2, 3, 12, 12)
    for score in ("log-softmax", "logit-minus-mean"):
        auto = loupe.explain(model, x, None, method="shuffle", n_shuffles=2, score=score)
        given = loupe.explain(model, x, model(x).argmax(1).tolist(), method="shuffle",
                              n_shuffles=2, score=score)
        assert torch.equal(auto, given)


@pytest.mark.parametrize("kind", ["dict", "tuple", "huggingface"])
@pytest.mark.parametrize(
    ("method", "options"),
    [("shuffle", {"n_shuffles": 2, "score": "log-softmax", "weight": "softmax",
                  "accumulate": "var"}),
     ("shuffle", {"n_shuffles": 2, "weight": "top-k", "top_k": 2}),
     ("saliency", {"score": "logit-minus-mean"}),
     ("smoothgrad", {"n_samples": 2, "score": "log-softmax"})],
)
def test_scores_and_weights_read_the_logits_out_of_any_output(kind, method, options):
    from tests.test_targets import Wrapped

    wrapped = Wrapped(kind)
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    expected = loupe.explain(wrapped.net, images, [[1, 3], [4, 0]], method=method, **options)
    maps = loupe.explain(wrapped, images, [[1, 3], [4, 0]], method=method, **options)
    torch.testing.assert_close(maps, expected, rtol=0, atol=0)
