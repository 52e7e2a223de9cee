"""loupe.models: model names, weights (enum, file, random), preprocessing, labels, patches."""

from __future__ import annotations

import pickle
import urllib.error

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.models import ResNet18_Weights, ResNet50_Weights, WeightsEnum

from loupe import models
from loupe.models import (
    Preprocessing,
    apply_patch,
    load_classifier,
    mean_std_from_scale,
    model_from_state_dict,
    preprocessing_from_options,
    preprocessing_from_weights,
    random_model,
    read_labels,
    read_state_dict,
)


def random_photo(width: int = 300, height: int = 200, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=g)
    return Image.fromarray(pixels.numpy(), "RGB")


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[torch.nn.Module, object]:
    model = random_model("resnet18", num_classes=7, seed=3)
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(model.state_dict(), path)
    return model, path


# -- preprocessing ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "weights", [ResNet50_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2]
)
def test_preprocessing_equals_torchvision_transforms(weights):
    image = random_photo()
    expected = weights.transforms()(image)
    pre = preprocessing_from_weights(weights)
    assert (pre.size, pre.resize) == (weights.transforms().crop_size[0],
                                      weights.transforms().resize_size[0])
    torch.testing.assert_close(pre(image), expected, rtol=0, atol=1e-6)


def test_view_is_the_centre_crop_and_normalize_uses_mean_std():
    pre = Preprocessing(size=4, resize=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    pixels = torch.arange(6 * 4 * 3, dtype=torch.uint8).view(6, 4, 3)  # H=6, W=4
    view = pre.view(Image.fromarray(pixels.numpy(), "RGB"))
    assert view.shape == (3, 4, 4)
    assert torch.equal(view, pixels[1:5].permute(2, 0, 1))  # rows 1..4 of 6: the centre
    x = pre.normalize(view[None])[0]
    expected = (view.float() / 255 - 0.5) / torch.tensor([0.25, 0.5, 1.0]).view(3, 1, 1)
    torch.testing.assert_close(x, expected)


@pytest.mark.parametrize(
    ("expression", "mean", "std"),
    [("x*2-1", 0.5, 0.5), ("(x*255-127.5)/127.5", 0.5, 0.5), ("x", 0.0, 1.0),
     ("2*(x-0.25)", 0.25, 0.5), ("-x+1", 1.0, -1.0), ("x/0.5 - 1", 0.5, 0.5)],
)
def test_scale_expression_to_mean_std(expression, mean, std):
    (m,), (s,) = mean_std_from_scale(expression)
    assert m == pytest.approx(mean) and s == pytest.approx(std)


@settings(max_examples=40, deadline=None)
@given(a=st.floats(0.01, 100) | st.floats(-100, -0.01), b=st.floats(-100, 100))
def test_scale_equals_the_expression_on_values(a, b):
    (m,), (s,) = mean_std_from_scale(f"x*{a!r} + {b!r}")
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close((x - m) / s, a * x + b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bad", ["x*x", "abs(x)", "__import__('os')", "0*x+1", "x/0", "y*2",
                                 "x*2-", "1/x"])
def test_scale_rejects_non_affine(bad):
    with pytest.raises(ValueError, match="--scale .* not an affine expression"):
        mean_std_from_scale(bad)


def test_preprocessing_from_options():
    pre = preprocessing_from_options(size=224, scale="x*2-1")
    assert (pre.size, pre.resize, pre.mean, pre.std) == (224, 256, (0.5,) * 3, (0.5,) * 3)
    assert preprocessing_from_options(size=64, resize=64).mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match="either --scale or --mean/--std"):
        preprocessing_from_options(scale="x", mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ValueError, match="--mean and --std go together"):
        preprocessing_from_options(mean=(0, 0, 0))
    with pytest.raises(ValueError, match="--std must not contain 0"):
        preprocessing_from_options(mean=(0, 0, 0), std=(1, 0, 1))
    with pytest.raises(ValueError, match=r"--resize \(10\) must be at least --size \(32\)"):
        preprocessing_from_options(size=32, resize=10)


# -- labels ----------------------------------------------------------------------------------

def test_read_labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("background\ncat\n dog \n\n\n")
    assert read_labels(path) == ("background", "cat", "dog")
    assert read_labels(path, offset=1) == ("cat", "dog")
    with pytest.raises(FileNotFoundError, match="labels file .*nope.txt does not exist"):
        read_labels(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="labels.txt: --label-offset 3 leaves no names"):
        read_labels(path, offset=3)


# -- weights ---------------------------------------------------------------------------------

def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'; did you mean .*resnet50"):
        models.check_model_name("resnet5")


def test_random_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = random_model("resnet18", num_classes=5, seed=1)
    after = torch.rand(3)
    b = random_model("resnet18", num_classes=5, seed=1)
    c = random_model("resnet18", num_classes=5, seed=2)
    assert torch.equal(before, after)
    assert torch.equal(a.fc.weight, b.fc.weight)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert not a.training


def test_state_dict_round_trip_infers_num_classes(resnet18_file):
    original, path = resnet18_file
    loaded = model_from_state_dict("resnet18", path)
    assert loaded.fc.out_features == 7 and not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)


def test_wrapped_and_dataparallel_state_dicts_load(resnet18_file, tmp_path):
    original, path = resnet18_file
    state = torch.load(path, weights_only=True)
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    loaded = read_state_dict(wrapped)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_state_dict_errors_name_the_file(resnet18_file, tmp_path):
    _, path = resnet18_file
    with pytest.raises(FileNotFoundError, match="weights file .*missing.pth does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pth: cannot load weights with weights_only"
                       r"=True \(not a file of tensors only: Unsupported operand \d+\)$"):
        read_state_dict(garbage)
    unsafe = tmp_path / "unsafe.pth"
    unsafe.write_bytes(pickle.dumps(Preprocessing(1, 1, (0.0,), (1.0,))))
    with pytest.raises(ValueError, match="unsafe.pth: cannot load weights with weights_only"):
        read_state_dict(unsafe)
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(ValueError, match="tensor.pth: not a state dict"):
        read_state_dict(tensor_file)
    with pytest.raises(ValueError, match=r"r18.pth: not a state dict for mobilenet_v2: \d+ miss"):
        model_from_state_dict("mobilenet_v2", path)
    with pytest.raises(ValueError, match=r"shape mismatches \(e.g. fc.weight: file \(7, 512\) vs "
                                         r"model \(3, 512\)\)"):
        model_from_state_dict("resnet18", path, num_classes=3)


def test_load_classifier_from_file_random_and_errors(resnet18_file, tmp_path):
    _, path = resnet18_file
    pre = preprocessing_from_options(size=32, resize=32)
    names = tuple(f"class{i}" for i in range(7))
    loaded = load_classifier("resnet18", str(path), preprocessing=pre, labels=names)
    assert loaded.class_names == names and loaded.preprocessing is pre
    assert loaded.source == str(path)
    rand = load_classifier("resnet18", "random", num_classes=4, seed=5)
    assert rand.model.fc.out_features == 4 and rand.class_names is None
    assert rand.preprocessing == preprocessing_from_options()
    with pytest.raises(ValueError, match="my.txt: 3 class names for a model with 7 outputs .*"
                                         "--label-offset 1"):
        load_classifier("resnet18", str(path), labels=("a", "b", "c"), labels_source="my.txt")
    with pytest.raises(ValueError, match="'IMAGENET_V9' is neither a file nor a weight name for "
                                         "resnet18 .*IMAGENET1K_V1"):
        load_classifier("resnet18", "IMAGENET_V9")
    with pytest.raises(FileNotFoundError, match="weights file .*nothing.pth does not exist"):
        load_classifier("resnet18", str(tmp_path / "nothing.pth"))


def test_enum_weights_bring_preprocessing_and_names(monkeypatch):
    state = random_model("resnet18", seed=0).state_dict()
    calls = []

    def fake_get_state_dict(self, *args, **kwargs):
        calls.append(self)
        return state

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    loaded = load_classifier("resnet18", "IMAGENET1K_V1")
    assert calls == [ResNet18_Weights.IMAGENET1K_V1]
    assert loaded.preprocessing == preprocessing_from_weights(ResNet18_Weights.IMAGENET1K_V1)
    assert loaded.class_names == tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(loaded.class_names) == 1000
    assert torch.equal(loaded.model.fc.weight, state["fc.weight"])


def test_enum_weights_offline_gives_a_clear_error(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ValueError, match="resnet18 weights ResNet18_Weights.IMAGENET1K_V1 are not "
                                         "in the torch hub cache .*--weights PATH"):
        load_classifier("resnet18", "IMAGENET1K_V1")


def test_model_names_are_torchvision_classifiers():
    names = models.model_names()
    assert {"resnet50", "mobilenet_v2", "vit_b_16"} <= set(names)
    assert "deeplabv3_resnet50" not in names  # segmentation models are not classifiers
    assert names == sorted(torchvision.models.list_models(module=torchvision.models))


# -- patches ---------------------------------------------------------------------------------

def test_apply_patch_calls_the_function(tmp_path):
    patch = tmp_path / "fix.py"
    patch.write_text(
        "import torch\n"
        "def zero_fc(model):\n"
        "    torch.nn.init.zeros_(model.fc.weight)\n"
        "def wrap(model):\n"
        "    return torch.nn.Sequential(model, torch.nn.Softmax(1))\n"
        "def returns_none(model):\n"
        "    model.patched = True\n"
    )
    model = random_model("resnet18", num_classes=3)
    assert apply_patch(model, f"{patch}:zero_fc") is model
    assert not model.fc.weight.any()
    assert isinstance(apply_patch(model, f"{patch}:wrap"), torch.nn.Sequential)
    assert apply_patch(model, f"{patch}:returns_none") is model and model.patched


def test_apply_patch_errors(tmp_path):
    model = random_model("resnet18", num_classes=3)
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    good = tmp_path / "good.py"
    good.write_text("def f(model):\n    return model\n")
    with pytest.raises(ValueError, match="must be PY_FILE:FUNCTION"):
        apply_patch(model, str(good))
    with pytest.raises(FileNotFoundError, match="patch file .*absent.py does not exist"):
        apply_patch(model, f"{tmp_path / 'absent.py'}:f")
    with pytest.raises(ValueError, match="broken.py: cannot import \\(SyntaxError"):
        apply_patch(model, f"{broken}:f")
    with pytest.raises(ValueError, match="good.py: has no function 'g'"):
        apply_patch(model, f"{good}:g")
