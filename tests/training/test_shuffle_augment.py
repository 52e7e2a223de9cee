"""``loupe train --shuffle-augment P``: tile-shuffled training images, as shuffle saliency
shuffles its inputs; off by default and then identical to the plain augmentation."""

from __future__ import annotations

import json

import pytest
import torch

from loupe.cli import main
from loupe.methods._tiles import draw_rounds, shuffle_images
from loupe.models import Preprocessing
from loupe.training.transforms import Augmentation, Transformed, augment, tile_shuffle

AUG = Augmentation(resize_long=(24, 40), crop=32)


def _image_and_mask(h: int = 30, w: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, h, w, generator=g), torch.randint(0, 4, (h, w), generator=g)


def _run(augmentation: Augmentation, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The augmented image and mask, and the generator's next draw (its state after)."""
    image, mask = _image_and_mask()
    g = torch.Generator().manual_seed(seed)
    out, out_mask = augment(image, mask, augmentation, Preprocessing(), g)
    return out, out_mask, float(torch.rand((), generator=g))


def _pixel_multiset(image: torch.Tensor) -> torch.Tensor:
    """The ``(H*W, C)`` pixel vectors of an image in a canonical (sorted) order."""
    pixels = image.flatten(1).T
    for c in reversed(range(pixels.shape[1])):  # stable lexicographic sort, last key first
        pixels = pixels[pixels[:, c].argsort(stable=True)]
    return pixels


def test_probability_zero_is_the_plain_augmentation_draw_for_draw():
    for seed in range(3):
        plain, shuffled = _run(Augmentation(resize_long=(24, 40), crop=32), seed), _run(
            Augmentation(resize_long=(24, 40), crop=32, shuffle=0.0), seed)
        assert torch.equal(plain[0], shuffled[0]) and torch.equal(plain[1], shuffled[1])
        assert plain[2] == shuffled[2]  # no extra random draw


@pytest.mark.parametrize("seed", range(6))
def test_probability_one_shuffles_every_sample_by_a_permutation_of_its_pixels(seed):
    plain, plain_mask, _ = _run(AUG, seed)
    shuffled, shuffled_mask, _ = _run(Augmentation(resize_long=(24, 40), crop=32, shuffle=1.0),
                                      seed)
    assert shuffled.shape == plain.shape and shuffled_mask.shape == plain_mask.shape
    assert not torch.equal(shuffled, plain)
    assert torch.equal(_pixel_multiset(shuffled), _pixel_multiset(plain))
    # the mask moves with its pixels: a permutation of the same (pixel, label) pairs
    assert torch.equal(_pixel_multiset(torch.cat([shuffled, shuffled_mask[None].float()])),
                       _pixel_multiset(torch.cat([plain, plain_mask[None].float()])))


def test_the_shuffle_is_a_round_of_shuffle_saliency():
    # Channel 0 numbers the pixels: the shuffled image shows which pixel went where, and that
    # is exactly the gather of the round drawn from the same generator state.
    image = torch.arange(24 * 36, dtype=torch.float32).view(1, 24, 36).expand(3, -1, -1)
    mask = torch.arange(24 * 36).view(24, 36) % 7
    for seed in range(5):
        out, out_mask = tile_shuffle(image, mask, torch.Generator().manual_seed(seed))
        (round_,) = draw_rounds(24, 36, 1, (2, 3, 4), jitter=True, offset="cyclic",
                                generator=torch.Generator().manual_seed(seed))
        assert round_.grid in (2, 3, 4)
        assert torch.equal(out, shuffle_images(image, round_))
        source = out[0].long()
        assert sorted(source.flatten().tolist()) == list(range(24 * 36))  # a permutation
        assert torch.equal(out_mask, source % 7)


def test_a_probability_between_shuffles_about_that_share_of_samples():
    half = Augmentation(resize_long=None, flip=False, jitter=(0, 0, 0, 0), crop=None,
                        shuffle=0.5)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    changed = sum(
        not torch.equal(augment(image, None, half, Preprocessing(),
                                torch.Generator().manual_seed(s))[0], Preprocessing()(image))
        for s in range(200))
    assert 70 <= changed <= 130  # Binomial(200, 0.5): outside this range p < 1e-4


def test_the_same_seed_gives_the_same_shuffled_samples():
    images = [(torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(i)), None)
              for i in range(4)]
    aug = Augmentation(resize_long=(16, 24), crop=16, shuffle=1.0)

    def item(sample, g):
        return augment(sample[0], sample[1], aug, Preprocessing(), g)[0]

    a, b = Transformed(images, item, seed=3), Transformed(images, item, seed=3)
    c = Transformed(images, item, seed=4)
    assert all(torch.equal(a[i], b[i]) for i in range(4))
    assert not all(torch.equal(a[i], c[i]) for i in range(4))


TRAIN = ["train", "--dataset", "synthetic", "--synthetic-train", "8", "--synthetic-val", "4",
         "--synthetic-size", "32", "--backbone", "small", "--pretrained", "none",
         "--epochs", "1", "--batch-size", "4", "--max-steps-per-epoch", "1", "--no-resize",
         "--crop", "32", "--device", "cpu", "--no-progress"]


def test_cli_records_the_probability_in_model_json(tmp_path, capsys):
    assert main([*TRAIN, "--shuffle-augment", "0.5", "--out", str(tmp_path / "run")]) == 0
    spec = json.loads((tmp_path / "run" / "model.json").read_text())
    assert spec["config"]["shuffle_augment"] == 0.5
    assert main([*TRAIN, "--shuffle-augment", "1.5", "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("loupe train: error: argument --shuffle-augment: expected a number in "
                     "[0, 1], got '1.5' (see loupe train --help)")
