"""AMN training: the loss against a hand computation and the authors' formulation, label
conditioning, a few steps lower the loss, the run folder round-trips and resumes, the run is
a model for ``loupe maps --method amn``, the CLI's errors."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import loupe.training.loop as loop_module
from loupe.api import explain
from loupe.cli import build_parser, main
from loupe.data import SyntheticSplits
from loupe.data.synthetic import make_synthetic
from loupe.io import load_torch
from loupe.masks.palette import save_mask_png
from loupe.models import (
    AMNModel,
    AMNNetwork,
    Preprocessing,
    backbone_features,
    build_classifier,
    load_classifier,
    load_model,
    save_model,
)
from loupe.models.weights import num_outputs
from loupe.training.amn import AMNConfig, amn_loss, downsample_labels, train_amn
from loupe.training.loop import set_train_mode, train_epoch
from loupe.training.schedules import poly_schedule

SPLITS = SyntheticSplits(n_train=16, n_val=4, size=32, seed=0)


# --------------------------------------------------------------------------- the loss


def _log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    total = sum(math.exp(v - top) for v in values)
    return [v - top - math.log(total) for v in values]


def test_loss_matches_a_hand_computation():
    # 3 channels (background + 2 classes), 2x2 pixels: background, class 1, ignored, class 2
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]],
                            [[0.0, 3.0], [1.0, 1.0]],
                            [[-1.0, 0.5], [2.0, 2.5]]]])
    labels = torch.tensor([[[0, 1], [255, 2]]])
    eps = 0.3
    q_other, q_label = eps / 2, 1 - eps

    def pixel_loss(i: int, j: int, label: int) -> float:
        log_p = _log_softmax([float(logits[0, c, i, j]) for c in range(3)])
        return -sum((q_label if c == label else q_other) * log_p[c] for c in range(3))

    background = pixel_loss(0, 0, 0)
    foreground = (pixel_loss(0, 1, 1) + pixel_loss(1, 1, 2)) / 2
    expected = (background + foreground) / 2
    assert float(amn_loss(logits, labels, eps)) == pytest.approx(expected, rel=1e-6)


def _authors_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """The published formulation, written out: labels resized to the logits by PIL's
    NEAREST, smoothed one-hot targets built with scatter, background and foreground means
    over the batch, their average."""
    b, c, h, w = logits.shape
    resized = torch.stack([torch.from_numpy(np.array(
        Image.fromarray(label.float().numpy()).resize((w, h), resample=Image.NEAREST)))
        for label in labels]).long()
    index = resized.where(resized != 255, 0)
    targets = torch.full((b, c, h, w), eps / (c - 1)).scatter_(1, index[:, None], 1 - eps)
    per_pixel = -(F.log_softmax(logits, 1) * targets).sum(1)
    background = (resized == 0).float()
    foreground = ((resized != 0) & (resized != 255)).float()
    return ((per_pixel * background).sum() / background.sum()
            + (per_pixel * foreground).sum() / foreground.sum()) / 2


def test_loss_equals_the_published_formulation_with_resized_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 7, 9, generator=g)
    labels = torch.randint(0, 6, (3, 50, 70), generator=g)
    labels[:, 10:20] = 255
    expected = _authors_loss(logits, labels, 0.4)
    torch.testing.assert_close(amn_loss(logits, labels, 0.4), expected, rtol=1e-5, atol=1e-6)


def test_labels_are_downsampled_like_pil_nearest():
    labels = torch.randint(0, 21, (2, 37, 53), generator=torch.Generator().manual_seed(1))
    for size in ((5, 7), (10, 13), (37, 53)):
        expected = torch.stack([torch.from_numpy(np.array(Image.fromarray(
            m.numpy().astype(np.uint8)).resize(size[::-1], resample=Image.NEAREST))).long()
            for m in labels])
        assert torch.equal(downsample_labels(labels, size), expected)


def test_loss_with_one_region_missing_and_errors():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    only_background = torch.tensor([[[0, 0], [255, 0]]])
    per_pixel = -(F.log_softmax(logits, 1) * torch.tensor([0.8, 0.1, 0.1])[:, None, None])
    expected = per_pixel.sum(1)[0].flatten()[[0, 1, 3]].mean()
    torch.testing.assert_close(amn_loss(logits, only_background, 0.2), expected)
    nothing = amn_loss(logits, torch.full((1, 2, 2), 255), 0.2)
    assert nothing.item() == 0.0
    nothing.backward()  # still part of the graph
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2 or 255"):
        amn_loss(logits, torch.tensor([[[0, 3], [1, 2]]]), 0.2)


# --------------------------------------------------------------------------- the network


def tiny_amn(seed: int = 0) -> AMNModel:
    torch.manual_seed(seed)
    classifier = build_classifier("small", 5).eval()
    network = AMNNetwork(backbone_features(copy.deepcopy(classifier)), 128, 5, rates=(1, 2))
    return AMNModel(network, classifier)


def test_label_conditioning_changes_the_output():
    model = tiny_amn().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    one = torch.tensor([[1.0, 0, 0, 0, 0]] * 2)
    other = torch.tensor([[0.0, 0, 1, 0, 1]] * 2)
    with torch.no_grad():
        a, b = model(images, one), model(images, other)
        assert a.shape == (2, 6, 4, 4)
        assert (a - b).abs().max() > 0.05 * a.abs().max()
        # the paper's conditioning: features scaled channel-wise by the encoded labels
        network = model.network
        features = network.backbone(images)
        scale = network.head.label_encoder.weight @ other[0] + network.head.label_encoder.bias
        torch.testing.assert_close(b, network.head.aspp(features * scale[:, None, None]))
        # a zero label vector leaves only the encoder's bias: still a valid output
        assert torch.isfinite(model(images, torch.zeros(2, 5))).all()
        # without labels the bundle is the classifier
        assert torch.equal(model(images), model.classifier(images))
    assert num_outputs(model) == 5
    with pytest.raises(ValueError, match=r"labels must be \(2, 5\) multi-hot"):
        model(images, torch.zeros(2, 4))


@pytest.mark.parametrize("backbone", ["small", "resnet18", "mobilenet_v2", "densenet121"])
def test_backbone_features_are_what_the_head_pools(backbone):
    torch.manual_seed(0)
    classifier = build_classifier(backbone, 4).eval()
    features = backbone_features(classifier)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled = features(x).mean((-2, -1))
        head = classifier.fc if hasattr(classifier, "fc") else classifier.classifier
        torch.testing.assert_close(head(pooled), classifier(x), rtol=1e-4, atol=1e-5)


def test_a_few_steps_lower_the_loss():
    data = make_synthetic(32, size=32, seed=0)
    images = Preprocessing()(data.images.float() / 255)
    labels, masks = data.labels[:, 1:], data.masks
    model = tiny_amn()
    head = [p for n, p in model.named_parameters() if n.startswith("network.head.")]
    body = [p for n, p in model.network.backbone.named_parameters()]
    optimizer = torch.optim.Adam([{"params": body, "lr": 1e-3}, {"params": head, "lr": 3e-2}])
    scheduler = poly_schedule(optimizer, 16, power=0.0)

    def loss_now() -> float:
        model.eval()
        with torch.no_grad():
            return float(amn_loss(model(images, labels), masks))

    before = loss_now()
    batches = [((images[i : i + 16], labels[i : i + 16]), masks[i : i + 16])
               for i in (0, 16)] * 8
    set_train_mode(model, freeze_bn=True)
    result = train_epoch(model, batches, amn_loss, optimizer, scheduler,
                         torch.amp.GradScaler("cuda", enabled=False), torch.device("cpu"),
                         amp=False, progress=False)
    assert result.steps == 16 and result.images == 256
    after = loss_now()
    # the smoothed targets' entropy is the least the loss can be (eps 0.4, 6 channels: 1.317)
    floor = -(0.6 * math.log(0.6) + 5 * 0.08 * math.log(0.08))
    assert floor < after
    # measured: 1.792 -> 1.587 after these 16 steps, 57% of the distance to the floor left
    assert after - floor < 0.75 * (before - floor), (before, after)


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A classifier run (random small network) and confident labels of the train split
    (the ground truth with every fourth column ignored)."""
    root = tmp_path_factory.mktemp("amn")
    train = make_synthetic(SPLITS.n_train, SPLITS.size, SPLITS.seed, SPLITS.scenes)
    torch.manual_seed(0)
    spec = {"kind": "classifier", "model": {"backbone": "small", "num_classes": 5,
                                            "head": "auto", "output_stride": 16},
            "preprocessing": Preprocessing().to_json(),
            "class_names": list(train.class_names[1:]), "label_offset": 1,
            "input_size": 32, "config": {}}
    save_model(root / "classifier", build_classifier("small", 5), spec)
    for index in range(len(train)):
        mask = train.masks[index].clone()
        mask[:, ::4] = 255
        save_mask_png(root / "masks" / f"{train.ids[index]}.png", mask)
    return root


def tiny_config(root, out, **changes) -> AMNConfig:
    config = AMNConfig(
        classifier=str(root / "classifier"), masks=str(root / "masks"), dataset="synthetic",
        synthetic=SPLITS, epochs=2, batch_size=8, lr=1e-4, crop=32, rescale=(0.8, 1.2),
        rates=(1, 2), max_steps_per_epoch=2, out=str(out), progress=False,
    )
    return replace(config, **changes)


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("amn-run")
    return out, train_amn(tiny_config(inputs, out))


def test_run_folder_round_trips(inputs, trained):
    out, path = trained
    spec = json.loads((out / "model.json").read_text())
    assert spec["kind"] == "amn" and spec["label_offset"] == 1
    assert spec["model"] == {"classifier": {"backbone": "small", "num_classes": 5,
                                            "head": "auto", "output_stride": 16},
                             "channels": 128, "rates": [1, 2], "dropout": 0.1}
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
    model, _ = load_model(path)
    assert isinstance(model, AMNModel)
    checkpoint = load_torch(out / "checkpoint.pt")
    assert checkpoint["epoch"] == 2 and "exp_avg" in str(checkpoint["optimizer"]["state"])
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in checkpoint["model"].items())
    # the classifier is frozen, and so are the backbone's first convolution and BatchNorm;
    # the rest of the backbone (started from the classifier's) was trained
    classifier = load_torch(inputs / "classifier" / "model.pt")
    assert all(torch.equal(state[f"classifier.{k}"], v) for k, v in classifier.items())
    assert torch.equal(state["network.backbone.0.weight"], classifier["features.0.weight"])
    assert torch.equal(state["network.backbone.1.weight"], classifier["features.1.weight"])
    assert not torch.equal(state["network.backbone.3.weight"], classifier["features.3.weight"])


def test_resume_ends_where_the_uninterrupted_run_did(inputs, trained, tmp_path, monkeypatch):
    out, _ = trained
    real_epoch = loop_module.train_epoch

    def crash_in_second_epoch(*args, **kwargs):
        if kwargs["description"].startswith("epoch 2/"):
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_amn(tiny_config(inputs, tmp_path))
    assert load_torch(tmp_path / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(loop_module, "train_epoch", real_epoch)
    train_amn(tiny_config(inputs, tmp_path, resume=True))
    straight, resumed = load_torch(out / "model.pt"), load_torch(tmp_path / "model.pt")
    for name, value in straight.items():
        assert torch.allclose(resumed[name].float(), value.float(), atol=1e-6), name


def test_the_run_is_a_model_for_loupe_maps(trained, tmp_path):
    out, path = trained
    loaded = load_classifier(str(out))
    assert loaded.num_outputs == 5 and loaded.label_offset == 1
    assert loaded.class_names == ("class1", "class2", "class3", "class4", "class5")
    images = torch.randn(2, 3, 32, 32)
    maps = explain(loaded.model, images, [[0, 2], [4, -1]], method="amn")
    assert maps.shape == (2, 2, 32, 32) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    code = main(["maps", "--dataset", "synthetic", "--synthetic-train", "16",
                 "--synthetic-size", "32", "--split", "train", "--limit", "4", "--model",
                 str(out), "--method", "amn", "--flip", "--out", str(tmp_path / "maps"),
                 "--device", "cpu", "--no-progress"])
    assert code == 0
    assert len(list((tmp_path / "maps").glob("*.npz"))) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--masks", "no/such"], "--masks no/such: folder not found"),
        (["--classifier", "no/such"], "--classifier no/such: not a loupe classifier run"),
        (["--eps", "1"], "--eps must be in [0, 1)"),
        (["--eps", "1.5"], "argument --eps: expected a number in [0, 1], got '1.5'"),
        (["--dataset", "voc"], "--root is required for --dataset voc"),
        (["--pretrained", "imagenet"], "backbone 'small' has no ImageNet weights"),
        (["--rescale", "0", "1"], "argument --rescale: expected a finite number > 0, got '0'"),
        (["--rescale", "1.5", "0.5"], "argument --rescale: expected MIN <= MAX, got 1.5 0.5"),
        (["--synthetic-size", "16", "--resume"], "--resume: no checkpoint at"),
    ],
)
def test_cli_errors_are_one_clear_line(inputs, tmp_path, capsys, args, message):
    code = main(["train-amn", "--classifier", str(inputs / "classifier"), "--masks",
                 str(inputs / "masks"), "--dataset", "synthetic", "--synthetic-train", "16",
                 "--synthetic-size", "32", "--out", str(tmp_path / "run"), "--no-progress",
                 *args])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("loupe train-amn: error:") and message in err, err


def test_cli_defaults_are_the_configs():
    # the parser imports no torch, so it spells AMNConfig's defaults out: they must agree
    args = build_parser().parse_args(["train-amn", "--classifier", "c", "--masks", "m",
                                      "--dataset", "synthetic", "--out", "o"])
    config = AMNConfig()
    for name in ("pretrained", "eps", "dropout", "freeze_bn", "freeze_stem", "epochs",
                 "batch_size", "lr", "head_lr_mult", "weight_decay", "crop", "seed"):
        assert getattr(args, name) == getattr(config, name), name
    assert tuple(args.rates) == config.rates and tuple(args.rescale) == config.rescale
    assert args.no_flip is not config.flip


def test_a_classifier_of_other_classes_is_refused(inputs, trained, tmp_path):
    spec = json.loads((inputs / "classifier" / "model.json").read_text())
    spec = {**spec, "model": {**spec["model"], "num_classes": 3}, "class_names": ["a", "b", "c"]}
    save_model(tmp_path / "other", build_classifier("small", 3), spec)
    with pytest.raises(ValueError, match="its 3 classes are not the data set's 5"):
        train_amn(tiny_config(inputs, tmp_path / "run", classifier=str(tmp_path / "other")))
    out, _ = trained
    with pytest.raises(ValueError, match="an? 'amn' run, not a classifier"):
        train_amn(tiny_config(inputs, tmp_path / "run", classifier=str(out)))
