"""Gradient methods: captum as the oracle on resnet18, exact values on hand-built models,
completeness, determinism, and option errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from loupe import explain
from loupe.methods.gradients import quadrature, standard_noise

TARGETS = torch.tensor([[3, 7], [5, 1]])

pytestmark = pytest.mark.filterwarnings(
    "ignore:Input Tensor 0 did not already require gradients:UserWarning"
)


def _randomize_batchnorm(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine terms: with the defaults (mean 0, var 1, gamma 1,
    beta 0) a bias-free ReLU ResNet is positively homogeneous, so IG would equal grad x input
    and the IG tests could not tell them apart."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))


def _resnet18(smooth: bool = False) -> nn.Module:
    """torchvision resnet18, seeded random weights, eval. ``smooth=True`` swaps its ReLUs for
    Softplus and its max-pool for an average pool (same weights, same architecture otherwise).

    Why the smooth variant for SmoothGrad / IG oracles: captum lays the copies out step-major
    in one batch, loupe image-major in chunks, so the same copy goes through differently
    composed batches and its activations differ by float32 rounding (~1e-8). In a ReLU network
    a unit whose input is within that of 0 flips, and the gradient jumps: we measured a 0.5%
    jump at one of 4 IG path points of this resnet18, which no implementation choice can
    remove. A smooth network turns rounding into rounding-sized differences. Saliency and
    gradient x input run the same batch as captum, so they are checked on the ReLU network.
    """
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    _randomize_batchnorm(model, seed=1)
    if smooth:
        model.maxpool = nn.AvgPool2d(3, 2, 1)
        for module in list(model.modules()):
            if hasattr(module, "relu"):
                module.relu = nn.Softplus(beta=2)
    return model.eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _resnet18()


@pytest.fixture(scope="module")
def smooth_resnet() -> nn.Module:
    return _resnet18(smooth=True)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    """Agreement to ``rtol`` relative to the largest magnitude of the expected maps."""
    scale = expected.abs().max().item()
    assert scale > 0, "the oracle gives all-zero maps; the comparison would be vacuous"
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


def _per_target(attribute, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Captum takes one target per image: one call per target column, stacked to (B, K, ...)."""
    return torch.stack(
        [attribute(images, targets[:, k].tolist()) for k in range(targets.shape[1])], dim=1
    )


# --- captum oracles --------------------------------------------------------------------------


def test_saliency_matches_captum(resnet, images):
    oracle = Saliency(resnet)
    grads = _per_target(lambda x, t: oracle.attribute(x, target=t, abs=False), images, TARGETS)
    reductions = {
        "abs-max": grads.abs().amax(2),
        "abs-sum": grads.abs().sum(2),
        "l2": grads.pow(2).sum(2).sqrt(),
        "sum": grads.sum(2),
    }
    for reduce, expected in reductions.items():
        maps = explain(resnet, images, TARGETS, method="saliency", reduce=reduce)
        assert maps.shape == (2, 2, 32, 32)
        _close(maps, expected)


def test_gradxinput_matches_captum(resnet, images):
    maps = explain(resnet, images, TARGETS, method="gradxinput")
    oracle = InputXGradient(resnet)
    expected = _per_target(lambda x, t: oracle.attribute(x, target=t), images, TARGETS)
    _close(maps, expected.sum(2))


@pytest.mark.parametrize(
    ("rule", "baseline"),
    [
        ("gausslegendre", "zeros"),
        ("gausslegendre", "mean"),
        ("riemann_left", "zeros"),
        ("riemann_right", "zeros"),
        ("riemann_middle", "mean"),
    ],
)
def test_integrated_gradients_matches_captum(smooth_resnet, images, rule, baseline):
    steps = 4
    base = (
        torch.zeros_like(images) if baseline == "zeros"
        else images.mean((2, 3), keepdim=True).expand_as(images).contiguous()
    )
    maps = explain(
        smooth_resnet, images, TARGETS, method="integrated-gradients", steps=steps, rule=rule,
        baseline=None if baseline == "zeros" else "mean", chunk_size=3,
    )
    oracle = IntegratedGradients(smooth_resnet)
    expected = _per_target(
        lambda x, t: oracle.attribute(x, baselines=base, target=t, n_steps=steps, method=rule),
        images, TARGETS,
    )
    _close(maps, expected.sum(2))


def test_trapezoid_rule_is_captums_rescaled_to_unit_weight(smooth_resnet, images):
    # Same nodes linspace(0, 1, n); captum weighs them 1/n (ends halved), which sums to
    # (n - 1) / n; loupe uses the trapezoid rule's 1/(n - 1), which sums to 1.
    steps = 4
    maps = explain(
        smooth_resnet, images, TARGETS, method="integrated-gradients", steps=steps,
        rule="riemann_trapezoid",
    )
    oracle = IntegratedGradients(smooth_resnet)
    expected = _per_target(
        lambda x, t: oracle.attribute(x, target=t, n_steps=steps, method="riemann_trapezoid"),
        images, TARGETS,
    )
    _close(maps, expected.sum(2) * steps / (steps - 1))


def test_smoothgrad_matches_captum_noise_tunnel(smooth_resnet, images, monkeypatch):
    """NoiseTunnel draws its noise inside with ``torch.normal(0, stdev_expanded)``, where
    ``stdev_expanded`` is ``(B * n, C, H, W)`` filled with the stdev and the inputs are
    ``repeat_interleave``-d (image-major). We patch ``torch.normal`` to return
    ``stdev_expanded * z.repeat(B, 1, 1, 1)``, with ``z`` loupe's standard-normal draw for the
    seed, so that sample s of every image gets ``sigma * z[s]``, as in loupe. Captum's
    ``stdevs`` is one float per call, so the per-image sigma of the paper
    (noise_level * (max - min)) is computed here by hand and captum is called per image.
    Captum averages ``|grad|`` per channel; summing channels afterwards commutes with the
    mean, so it equals loupe's mean over samples of the ``"abs-sum"`` reduction."""
    n, seed, noise_level = 4, 3, 0.2
    z = standard_noise(n, images.shape[1:], seed=seed)
    calls = []

    def shared_normal(mean, std, *args, **kwargs):
        assert mean == 0 and not args and not kwargs
        calls.append(tuple(std.shape))
        return std * z.repeat(std.shape[0] // n, 1, 1, 1)

    maps = explain(
        smooth_resnet, images, TARGETS, method="smoothgrad", n_samples=n, seed=seed,
        noise_level=noise_level, reduce="abs-sum", chunk_size=3,
    )
    monkeypatch.setattr(torch, "normal", shared_normal)
    tunnel = NoiseTunnel(Saliency(smooth_resnet))
    expected = torch.empty_like(maps)
    for i in range(images.shape[0]):
        x = images[i : i + 1]
        sigma = noise_level * (x.max() - x.min()).item()
        for k in range(TARGETS.shape[1]):
            attribution = tunnel.attribute(
                x, nt_type="smoothgrad", nt_samples=n, stdevs=sigma,
                target=int(TARGETS[i, k]),
            )
            expected[i, k] = attribution[0].sum(0)
    assert calls == [(n, 3, 32, 32)] * 4  # one draw per (image, target) call
    _close(maps, expected)


def test_smoothgrad_abs_max_matches_captum_saliency_of_noisy_copies(smooth_resnet, images):
    # The seed's draw reproduced by hand: torch.randn((n, C, H, W)) from a CPU generator
    # seeded with the seed; each image's copies are x + sigma * z[s].
    n, seed, stdev = 4, 11, 0.3
    z = torch.randn((n, 3, 32, 32), generator=torch.Generator().manual_seed(seed))
    maps = explain(smooth_resnet, images, TARGETS, method="smoothgrad", n_samples=n, seed=seed,
                   stdev=stdev)
    oracle = Saliency(smooth_resnet)
    expected = torch.stack([
        torch.stack([
            oracle.attribute(images[i] + stdev * z, target=[int(TARGETS[i, k])] * n)
            .amax(1).mean(0)
            for k in range(2)
        ])
        for i in range(2)
    ])
    _close(maps, expected)


# --- exact values on hand-built models ------------------------------------------------------


class Linear(nn.Module):
    """``S_k(x) = sum_j W_kj x_j + b_k``: gradient ``W_k`` everywhere."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # (N, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.flatten(1).T + 1.0


class Quadratic(Linear):
    """``S_k(x) = sum_j W_kj x_j^2``: gradient ``2 W_k x``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.pow(2).flatten(1) @ self.weight.flatten(1).T


@pytest.fixture
def weight() -> torch.Tensor:
    return torch.randn(4, 3, 5, 6, generator=torch.Generator().manual_seed(5))


@pytest.fixture
def small_images() -> torch.Tensor:
    return torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(6))


SMALL_TARGETS = torch.tensor([[0, 2], [3, 1]])


def test_saliency_and_gradxinput_of_a_linear_model(weight, small_images):
    model = Linear(weight)
    w = weight[SMALL_TARGETS]  # (B, K, C, H, W): the gradient of each target
    saliency = explain(model, small_images, SMALL_TARGETS, method="saliency")
    torch.testing.assert_close(saliency, w.abs().amax(2))
    l2 = explain(model, small_images, SMALL_TARGETS, method="saliency", reduce="l2")
    torch.testing.assert_close(l2, w.norm(dim=2))
    gxi = explain(model, small_images, SMALL_TARGETS, method="gradxinput")
    torch.testing.assert_close(gxi, (w * small_images[:, None]).sum(2))


@pytest.mark.parametrize(
    ("rule", "factor"),
    [
        ("gausslegendre", lambda n: 1.0),
        ("riemann_trapezoid", lambda n: 1.0),
        ("riemann_middle", lambda n: 1.0),
        ("riemann_left", lambda n: (n - 1) / n),  # sum_i (i/n)(1/n) * 2
        ("riemann_right", lambda n: (n + 1) / n),
    ],
)
def test_integrated_gradients_of_a_quadratic_model(weight, small_images, rule, factor):
    # Along x' + a (x - x') the gradient 2 W (x' + a (x - x')) is linear in a, so
    # IG = (x - x') * W (x + x') = W (x^2 - x'^2) exactly for rules that integrate lines
    # exactly, and the left/right sums are off by the stated factor on the a-term.
    model = Quadratic(weight)
    w = weight[SMALL_TARGETS]
    x = small_images
    steps = 4
    zero = explain(model, x, SMALL_TARGETS, method="integrated-gradients", steps=steps,
                   rule=rule)
    torch.testing.assert_close(zero, (factor(steps) * w * x[:, None] ** 2).sum(2))
    if factor(steps) == 1.0:
        base = torch.linspace(-1, 1, 3)[:, None, None]  # (C, 1, 1), broadcast
        shifted = explain(model, x, SMALL_TARGETS, method="integrated-gradients",
                          steps=steps, rule=rule, baseline=base)
        torch.testing.assert_close(shifted, (w * (x**2 - base**2)[:, None]).sum(2))


def test_smoothgrad_of_a_quadratic_model_by_hand(weight, small_images):
    model = Quadratic(weight)
    n, noise_level = 7, 0.1
    x = small_images
    sigma = noise_level * (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))
    z = torch.randn((n, 3, 5, 6), generator=torch.Generator().manual_seed(0))
    noisy = x[:, None] + sigma[:, None, None, None, None] * z  # (B, n, C, H, W)
    grads = 2 * weight[SMALL_TARGETS][:, :, None] * noisy[:, None]  # (B, K, n, C, H, W)
    maps = explain(model, x, SMALL_TARGETS, method="smoothgrad", n_samples=n,
                   noise_level=noise_level)
    torch.testing.assert_close(maps, grads.abs().amax(3).mean(2))


# --- completeness, targets, determinism, invariances on a small CNN --------------------------


def _small_cnn(activation: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), activation(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), activation(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    _randomize_batchnorm(model, seed=5)
    return model.eval()


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return _small_cnn()


@pytest.fixture(scope="module")
def cnn_images() -> torch.Tensor:
    return 2 * torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(7))


def _score_differences(model, images, baseline, targets):
    with torch.no_grad():
        return model(images).gather(1, targets) - model(baseline).gather(1, targets)


def test_integrated_gradients_completeness_on_a_smooth_model(cnn_images):
    # Smooth and clearly nonlinear along the path: 16 Gauss-Legendre nodes reach float32
    # precision, while 2 nodes are visibly off (so the check has teeth).
    model = _small_cnn(nn.Tanh)
    expected = _score_differences(model, cnn_images, torch.full_like(cnn_images, 0.5), TARGETS)
    sums = {
        steps: explain(model, cnn_images, TARGETS, method="integrated-gradients", steps=steps,
                       baseline=0.5).sum((-2, -1))
        for steps in (2, 16)
    }
    _close(sums[16], expected, rtol=1e-4)
    assert (sums[2] - expected).abs().max() > 1e-3 * expected.abs().max()


def test_integrated_gradients_completeness_on_resnet18(images):
    # ReLU network: the integrand is piecewise constant along the path, so the quadrature
    # converges slowly; 64 nodes give about 1% here (measured 0.8%).
    model = _resnet18()
    expected = _score_differences(model, images, torch.full_like(images, 0.25), TARGETS)
    maps = explain(model, images, TARGETS, method="integrated-gradients", steps=64,
                   baseline=0.25, chunk_size=64)
    _close(maps.sum((-2, -1)), expected, rtol=0.03)


def test_quadrature_weights_integrate_exactly():
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        alphas, weights = quadrature(rule, 6, dtype=torch.float64)
        assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert (weights * alphas).sum().item() == pytest.approx(0.5, abs=1e-12)
    alphas, weights = quadrature("gausslegendre", 4, dtype=torch.float64)
    assert (weights * alphas**7).sum().item() == pytest.approx(1 / 8, abs=1e-12)  # degree 2n-1


FAST = {"smoothgrad": {"n_samples": 3}, "integrated-gradients": {"steps": 3}}


@pytest.mark.parametrize("method", ["saliency", "gradxinput", "smoothgrad",
                                    "integrated-gradients"])
def test_top1_padding_and_score_function_targets(cnn, cnn_images, method):
    opts = FAST.get(method, {})
    with torch.no_grad():
        top1 = cnn(cnn_images).argmax(1, keepdim=True)
    default = explain(cnn, cnn_images, None, method=method, **opts)
    torch.testing.assert_close(default, explain(cnn, cnn_images, top1, method=method, **opts))
    padded = explain(cnn, cnn_images, [[3, 7], [5]], method=method, **opts)
    assert padded[1, 1].abs().max() == 0 and padded[0, 1].abs().max() > 0
    single = explain(cnn, cnn_images, [3, 5], method=method, **opts)
    torch.testing.assert_close(padded[:, :1], single)
    scored = explain(cnn, cnn_images, lambda out: out[:, 3], method=method, **opts)
    torch.testing.assert_close(scored, explain(cnn, cnn_images, 3, method=method, **opts))


def test_smoothgrad_seed_batch_and_chunk_invariance(cnn, cnn_images):
    options = {"method": "smoothgrad", "n_samples": 5, "seed": 7}
    reference = explain(cnn, cnn_images, TARGETS, chunk_size=32, **options)
    for chunk_size in (1, 3):
        torch.testing.assert_close(
            explain(cnn, cnn_images, TARGETS, chunk_size=chunk_size, **options), reference
        )
    for i in range(2):
        alone = explain(cnn, cnn_images[i : i + 1], TARGETS[i : i + 1], chunk_size=2,
                        **options)
        torch.testing.assert_close(alone, reference[i : i + 1])
    generator = torch.Generator().manual_seed(7)
    torch.testing.assert_close(
        explain(cnn, cnn_images, TARGETS, method="smoothgrad", n_samples=5,
                generator=generator),
        reference,
    )
    other = explain(cnn, cnn_images, TARGETS, method="smoothgrad", n_samples=5, seed=8)
    assert (other - reference).abs().max() > 1e-3 * reference.abs().max()


def test_integrated_gradients_batch_and_chunk_invariance(cnn, cnn_images):
    options = {"method": "integrated-gradients", "steps": 5, "baseline": "mean"}
    reference = explain(cnn, cnn_images, TARGETS, **options)
    for chunk_size in (1, 4):
        torch.testing.assert_close(
            explain(cnn, cnn_images, TARGETS, chunk_size=chunk_size, **options), reference
        )
    for i in range(2):
        alone = explain(cnn, cnn_images[i : i + 1], TARGETS[i : i + 1], **options)
        torch.testing.assert_close(alone, reference[i : i + 1])


# --- option errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("saliency", {"reduce": "max"}, "reduce must be one of abs-max, abs-sum, l2, sum; "
                                        "got 'max'"),
        ("gradxinput", {"reduce": None}, "reduce must be one of"),
        ("smoothgrad", {"n_samples": 0}, "n_samples must be an integer >= 1, got 0"),
        ("smoothgrad", {"chunk_size": 2.5}, "chunk_size must be an integer >= 1, got 2.5"),
        ("smoothgrad", {"noise_level": -0.1}, "noise_level must be a finite number >= 0"),
        ("smoothgrad", {"stdev": float("nan")}, "stdev must be a finite number >= 0"),
        ("smoothgrad", {"seed": "a"}, "seed must be an int (or pass generator=), got 'a'"),
        ("smoothgrad", {"generator": 3}, "generator must be a torch.Generator, got int"),
        ("smoothgrad", {"reduce": "mean"}, "reduce must be one of"),
        ("integrated-gradients", {"steps": 0}, "steps must be an integer >= 1, got 0"),
        ("integrated-gradients", {"steps": 1, "rule": "riemann_trapezoid"},
         "steps must be an integer >= 2, got 1"),
        ("integrated-gradients", {"rule": "simpson"}, "rule must be one of gausslegendre, "),
        ("integrated-gradients", {"baseline": "blur"}, "baseline must be 'mean', a number or "
                                                      "a tensor; got 'blur'"),
        ("integrated-gradients", {"baseline": torch.zeros(2, 3)},
         "baseline of shape (2, 3) does not broadcast to the images' shape (2, 3, 5, 6)"),
        ("integrated-gradients", {"baseline": [0.0]}, "baseline must be 'mean', a number or "
                                                     "a tensor; got list"),
        ("integrated-gradients", {"chunk_size": 0}, "chunk_size must be an integer >= 1"),
    ],
)
def test_option_errors(weight, small_images, method, options, message):
    with pytest.raises(ValueError) as error:
        explain(Linear(weight), small_images, SMALL_TARGETS, method=method, **options)
    assert message in str(error.value)
