"""The shared score transform and smoothing of the gradient methods (saliency, SmoothGrad,
shuffle): exact values on linear models, captum as an oracle, properties and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import loupe
from loupe.methods._scores import class_scores, gaussian_blur, smooth_maps


def linear_model(n_classes: int = 4, size: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, n_classes)).eval()


def test_class_scores_by_hand():
    z = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    # z_k - mean of the other two
    expected = torch.tensor([[1 - 4.0, 2 - 3.5, 6 - 1.5], [0 - 1.5, 0 - 1.5, 3 - 0.0]])
    torch.testing.assert_close(class_scores(z, "logit-minus-mean"), expected)
    torch.testing.assert_close(class_scores(z, "log-softmax"), z - z.logsumexp(1, keepdim=True))
    assert class_scores(z, "logit") is z
    for score in ("log-softmax", "logit-minus-mean"):  # the arg-max is kept
        assert torch.equal(class_scores(z, score).argmax(1), z.argmax(1))


@pytest.mark.parametrize("score", ["logit", "log-softmax", "logit-minus-mean"])
def test_saliency_of_a_linear_model_is_the_weight_row_by_hand(score):
    """For z = W x + b: dz_k/dx = W_k; d(z_k - mean_{j!=k} z_j)/dx = W_k - mean_{j!=k} W_j;
    d log p_k / dx = W_k - sum_j p_j W_j."""
    model = linear_model()
    x = torch.randn(2, 3, 6, 6)
    classes = [1, 3]
    maps = loupe.explain(model, x, classes, method="saliency", score=score)
    w = model[1].weight.detach()  # (N, D)
    rows = []
    for b, k in enumerate(classes):
        if score == "logit":
            g = w[k]
        elif score == "logit-minus-mean":
            g = w[k] - (w.sum(0) - w[k]) / (w.shape[0] - 1)
        else:
            p = torch.softmax(model(x[b : b + 1]), 1)[0].detach()
            g = w[k] - p @ w
        rows.append(g.view(3, 6, 6).abs().amax(0))
    torch.testing.assert_close(maps[:, 0], torch.stack(rows), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("score", ["log-softmax", "logit-minus-mean"])
def test_saliency_matches_captum_on_the_transformed_output(score):
    from captum.attr import Saliency

    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.randn(3, 3, 10, 10)
    classes = torch.tensor([0, 4, 2])
    ours = loupe.explain(model, x, classes.tolist(), method="saliency", score=score)
    theirs = Saliency(lambda inp: class_scores(model(inp), score)).attribute(
        x, target=classes, abs=True
    )
    torch.testing.assert_close(ours[:, 0], theirs.amax(1), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("score", ["log-softmax", "logit-minus-mean"])
def test_smoothgrad_of_a_linear_model_is_saliency_and_top1_is_unchanged(score):
    """A linear model's gradient does not depend on the input: every noisy sample gives the
    saliency map of ``logit-minus-mean``; for log-softmax p changes with the noise, so only
    the clean-image check is exact there."""
    model = linear_model()
    x = torch.randn(2, 3, 6, 6)
    smooth = loupe.explain(model, x, None, method="smoothgrad", n_samples=4, score=score)
    plain = loupe.explain(model, x, None, method="saliency", score=score)
    if score == "logit-minus-mean":
        torch.testing.assert_close(smooth, plain, rtol=1e-5, atol=1e-7)
    noiseless = loupe.explain(model, x, None, method="smoothgrad", n_samples=3, stdev=0.0,
                              score=score)
    torch.testing.assert_close(noiseless, plain, rtol=1e-5, atol=1e-7)
    by_class = loupe.explain(model, x, model(x).argmax(1).tolist(), method="saliency",
                             score=score)
    torch.testing.assert_close(plain, by_class)


@pytest.mark.parametrize("method", ["saliency", "smoothgrad"])
def test_smooth_option_is_the_relative_gaussian_blur(method):
    model = linear_model(size=8)
    x = torch.randn(2, 3, 8, 8)
    options = {"n_samples": 2} if method == "smoothgrad" else {}
    raw = loupe.explain(model, x, [0, 1], method=method, **options)
    smoothed = loupe.explain(model, x, [0, 1], method=method, smooth=0.25, **options)
    torch.testing.assert_close(smoothed, gaussian_blur(raw, 2.0), rtol=1e-5, atol=1e-7)
    assert torch.equal(smooth_maps(raw, 0.0), raw)
    assert not torch.allclose(smoothed, raw)


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "shuffle"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"score": "softmax"}, "score must be one of logit, log-softmax, logit-minus-mean"),
        ({"smooth": 4}, "smooth must be a Gaussian sigma as a fraction of the shorter image"),
        ({"smooth": True}, "smooth must be a Gaussian sigma as a fraction"),
    ],
)
def test_bad_score_and_smooth_raise(method, options, message):
    with pytest.raises(ValueError, match=message):
        loupe.explain(linear_model(), torch.randn(1, 3, 6, 6), 0, method=method, **options)


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "shuffle"])
def test_class_scores_need_class_targets(method):
    model, x = linear_model(), torch.randn(1, 3, 6, 6)
    with pytest.raises(ValueError, match="score='log-softmax' needs class targets"):
        loupe.explain(model, x, lambda out: out[:, 0], method=method, score="log-softmax")


def test_class_scores_need_class_logits():
    with pytest.raises(ValueError, match=r"needs class logits \(B, N\) from the model"):
        class_scores(torch.zeros(2, 3, 4), "log-softmax")
    with pytest.raises(ValueError, match="at least 2 outputs"):
        class_scores(torch.zeros(2, 1), "logit-minus-mean")
