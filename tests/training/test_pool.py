"""``loupe train --pool gap|gmp``: global max pooling for any backbone with a pooling module,
recorded in model.json so that the run reloads with it, and CAM exact on the result."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from loupe.api import explain
from loupe.cli import main
from loupe.methods.heads import find_cam_head
from loupe.models import build_classifier, load_classifier
from loupe.models.pooling import PooledClassifier


def max_pools(model: nn.Module) -> int:
    return sum(isinstance(m, nn.AdaptiveMaxPool2d) for m in model.modules())


def avg_pools(model: nn.Module) -> int:
    return sum(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())


def calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BatchNorm statistics of ``x`` (at random initialisation a deep net's eval-mode
    features all but vanish), then eval mode."""
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@pytest.mark.parametrize("backbone", ["small", "resnet18", "mobilenet_v2", "densenet121",
                                      "efficientnet_b0"])
def test_gmp_replaces_the_global_average_pooling(backbone):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    gap = calibrated(build_classifier(backbone, 4), x)
    gmp = build_classifier(backbone, 4, pool="gmp").eval()
    assert max_pools(gmp) == 1 and max_pools(gap) == 0
    assert avg_pools(gmp) == avg_pools(gap) - (backbone not in ("mobilenet_v2", "densenet121"))
    # the same parameters under the same keys: a GAP state dict loads into the GMP model
    assert gap.state_dict().keys() == gmp.state_dict().keys()
    gmp.load_state_dict(gap.state_dict())
    with torch.no_grad():
        assert not torch.allclose(gap(x), gmp(x), rtol=1e-3, atol=1e-5)
    maps = explain(gmp, x, [[0, 3]] * 4, method="cam", upsample=False)
    assert maps.shape[:2] == (4, 2) and torch.isfinite(maps).all()


def test_gmp_mobilenet_v2_is_torchvisions_forward_with_a_max():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model = calibrated(build_classifier("mobilenet_v2", 4, pool="gmp"), x)
    assert isinstance(model, PooledClassifier) and not model.relu
    with torch.no_grad():
        features = model.features(x)
        expected = model.classifier(features.amax((-2, -1)))
        torch.testing.assert_close(model(x), expected)
        head = find_cam_head(model, features, model(x))
    assert head.pool == "max" and head.name == "classifier.1"


def test_gmp_densenet_pools_the_relu_of_its_features():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    model = calibrated(build_classifier("densenet121", 3, pool="gmp"), x)
    with torch.no_grad():
        features = model.features(x)
        torch.testing.assert_close(model(x), model.classifier(features.relu().amax((-2, -1))))
        head = find_cam_head(model, features, model(x))
    assert head.pool == "max" and head.relu


def test_gmp_timm_backbone_uses_timms_max_pooling():
    pytest.importorskip("timm")
    model = build_classifier("timm:resnet18", 3, pool="gmp").eval()
    assert model.global_pool.pool_type == "max"


def test_pool_errors_name_the_option_and_the_backbone():
    with pytest.raises(ValueError, match="--pool must be one of gap, gmp, got 'mean'"):
        build_classifier("small", 3, pool="mean")
    with pytest.raises(ValueError, match="--pool gmp: backbone 'shufflenet_v2_x0_5' has no "
                       "global average pooling module"):
        build_classifier("shufflenet_v2_x0_5", 3, pool="gmp")


@pytest.fixture(scope="module")
def gmp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gmp")
    code = main(["train", "--dataset", "synthetic", "--synthetic-train", "16",
                 "--synthetic-val", "8", "--synthetic-size", "32", "--backbone", "small",
                 "--pretrained", "none", "--pool", "gmp", "--epochs", "1", "--batch-size", "8",
                 "--resize-long", "28", "36", "--crop", "32", "--max-steps-per-epoch", "1",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_pool_round_trips_through_model_json(gmp_run):
    spec = json.loads((gmp_run / "model.json").read_text())
    assert spec["model"]["pool"] == "gmp" and spec["config"]["pool"] == "gmp"
    classifier = load_classifier(str(gmp_run))
    model = classifier.model
    assert max_pools(model) == 1 and avg_pools(model) == 0
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        features = model.features(x)
        logits = model(x)
    torch.testing.assert_close(logits, features.amax((-2, -1)) @ model.fc.weight.T)
    # CAM of the reloaded GMP run: W · A exactly
    maps = explain(model, x, [[0, 1], [2, 3]], method="cam", upsample=False)
    rows = model.fc.weight[torch.tensor([[0, 1], [2, 3]])]
    torch.testing.assert_close(maps, torch.einsum("bkc,bchw->bkhw", rows, features))


def test_runs_without_a_pool_entry_reload_as_gap(gmp_run, tmp_path):
    spec = json.loads((gmp_run / "model.json").read_text())
    del spec["model"]["pool"]  # model.json of a run made before --pool
    (tmp_path / "model.json").write_text(json.dumps(spec))
    (tmp_path / "model.pt").write_bytes((gmp_run / "model.pt").read_bytes())
    model = load_classifier(str(tmp_path)).model
    assert avg_pools(model) == 1 and max_pools(model) == 0


def test_cli_rejects_an_unknown_pool(tmp_path, capsys):
    assert main(["train", "--dataset", "synthetic", "--pool", "avg", "--out",
                 str(tmp_path)]) == 2
    assert "--pool: invalid choice: 'avg'" in capsys.readouterr().err
