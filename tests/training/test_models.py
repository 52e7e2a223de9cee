"""Classifier and segmenter construction: the IRN head that CAM finds, weights, errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from loupe import explain
from loupe.methods.heads import find_cam_head
from loupe.models import (
    SmallGAPNet,
    build_classifier,
    build_segmenter,
    classifier_head,
    load_model,
    save_model,
)
from loupe.models.networks import OFFLINE_MESSAGE
from loupe.training.classifier import freeze_stem


def _seeded(builder, *args, **kwargs):
    torch.manual_seed(0)
    return builder(*args, **kwargs).eval()


def test_irn_resnet_head_has_output_stride_16_and_a_bias_free_linear():
    model = _seeded(build_classifier, "resnet18", 5)
    assert isinstance(model.fc, nn.Linear) and model.fc.bias is None
    assert model.fc.out_features == 5
    x = torch.randn(2, 3, 64, 64)
    features = {}
    model.layer4.register_forward_hook(lambda m, i, o: features.update(out=o))
    with torch.no_grad():
        model(x)
    assert features["out"].shape[-2:] == (4, 4)  # 64 / 16
    stride32 = _seeded(build_classifier, "resnet18", 5, output_stride=32)
    stride32.layer4.register_forward_hook(lambda m, i, o: features.update(out=o))
    with torch.no_grad():
        stride32(x)
    assert features["out"].shape[-2:] == (2, 2)


@pytest.mark.parametrize("backbone", ["resnet18", "small"])
def test_cam_finds_the_head_and_is_exact(backbone):
    model = _seeded(build_classifier, backbone, 5)
    x = torch.randn(2, 3, 64, 64)
    targets = [[0, 3], [4, 1]]
    maps = explain(model, x, targets, method="cam", upsample=False)
    with torch.no_grad():
        logits = model(x)
    expected = logits.gather(1, torch.tensor(targets))
    # bias-free GAP + linear: the spatial mean of CAM_k is exactly logit_k
    assert torch.allclose(maps.mean((-2, -1)), expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        layer = "layer4" if backbone == "resnet18" else "features"
        activation = {}
        handle = model.get_submodule(layer).register_forward_hook(
            lambda m, i, o: activation.update(a=o))
        model(x)
        handle.remove()
    head = find_cam_head(model, activation["a"], logits)
    assert head.name == "fc" and bool((head.bias == 0).all())


def test_other_backbones_get_a_new_linear_head():
    model = _seeded(build_classifier, "mobilenet_v3_small", 7)
    assert classifier_head(model) == "classifier.3"
    assert model.classifier[3].out_features == 7
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ValueError, match="needs a ResNet"):
        build_classifier("mobilenet_v3_small", 7, head="irn")


def test_imagenet_weights_offline_give_the_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ValueError, match="ImageNet weights not available offline; use "
                       "--init PATH or --pretrained none"):
        build_classifier("resnet18", 5, pretrained="imagenet")
    assert "--pretrained none" in OFFLINE_MESSAGE
    with pytest.raises(ValueError, match="ImageNet weights not available offline"):
        build_segmenter("mobilenet_v3_large", 3, pretrained="imagenet")


def test_init_loads_everything_but_the_head(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    model = build_classifier("resnet18", 5, init=str(path))
    for name, value in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(value, source.state_dict()[name]), name
    assert model.fc.weight.shape == (5, 512)


def test_init_from_the_coral_mobilenet(assets):
    path = assets / "weights" / "mobilenet_v2_imagenet1k_coral.pth"
    state = torch.load(path, weights_only=True)
    model = build_classifier("mobilenet_v2", 3, init=str(path))
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])
    assert model.classifier[1].out_features == 3


def test_init_that_does_not_fit_names_the_file(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(SmallGAPNet(5).state_dict(), path)
    with pytest.raises(ValueError, match="small.pt: does not fit ResNet"):
        build_classifier("resnet18", 5, init=str(path))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_classifier("resnet18", 5, init=str(tmp_path / "missing.pt"))
    bad = tmp_path / "notes.pt"
    bad.write_text("not a torch file")
    with pytest.raises(ValueError, match="notes.pt: cannot read"):
        build_classifier("resnet18", 5, init=str(bad))


def test_unknown_backbones_and_options_are_named():
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'.*small-s4-local2"):
        build_classifier("resnet9", 5)
    with pytest.raises(ValueError, match="output_stride"):
        build_classifier("resnet18", 5, output_stride=8)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_classifier("small", 5, pretrained="imagenet")
    with pytest.raises(ValueError, match="unknown segmentation backbone"):
        build_segmenter("vgg16", 3)


def test_freeze_stem_freezes_irn_stage_one():
    model = build_classifier("resnet18", 5)
    assert freeze_stem(model) == ["conv1", "bn1", "layer1"]
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert freeze_stem(SmallGAPNet(5)) == []


def test_saved_models_rebuild_with_the_same_outputs(tmp_path):
    model = _seeded(build_classifier, "small", 4)
    spec = {"kind": "classifier", "model": {"backbone": "small", "num_classes": 4,
            "head": "auto", "output_stride": 16},
            "preprocessing": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    save_model(tmp_path, model, spec)
    loaded, read = load_model(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert read["preprocessing"]["mean"] == [0.5] * 3
    segmenter = _seeded(build_segmenter, "mobilenet_v3_large", 3)
    save_model(tmp_path / "seg", segmenter, {"kind": "segmenter", "model": {
        "backbone": "mobilenet_v3_large", "num_classes": 3}, "preprocessing": spec[
        "preprocessing"]})
    loaded, _ = load_model(tmp_path / "seg" / "model.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x)["out"], segmenter(x)["out"])


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text('{"kind": "detector", "model": {}}')
    with pytest.raises(ValueError, match="unknown model kind 'detector'"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path)


def test_timm_backbones_through_the_extra():
    pytest.importorskip("timm")
    model = _seeded(build_classifier, "timm:resnet18", 5)
    assert classifier_head(model) == "fc" and model.fc.out_features == 5
    x = torch.randn(2, 3, 64, 64)
    maps = explain(model, x, [[0, 2], [4, 1]], method="cam", upsample=False)
    with torch.no_grad():
        logits = model(x)
    expected = logits.gather(1, torch.tensor([[0, 2], [4, 1]])) - model.fc.bias[
        torch.tensor([[0, 2], [4, 1]])]
    assert torch.allclose(maps.mean((-2, -1)), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown backbone timm:no_such_model_xyz"):
        build_classifier("timm:no_such_model_xyz", 5)
