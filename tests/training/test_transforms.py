"""Augmentation: seeded, shapes, padding with the ignore label, preprocessing rules."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from loupe.models import Preprocessing
from loupe.training.transforms import (
    IGNORE_INDEX,
    Augmentation,
    Transformed,
    augment,
    image_tensor,
    random_crop,
    resize_and_pad,
    sample_seed,
)


def _image_and_mask(h: int = 30, w: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, h, w, generator=g)
    mask = torch.randint(0, 4, (h, w), generator=g)
    return image, mask


def test_same_generator_seed_same_augmentation_and_shapes():
    image, mask = _image_and_mask()
    aug = Augmentation(resize_long=(30, 60), crop=48)
    a = augment(image, mask, aug, Preprocessing(), torch.Generator().manual_seed(5))
    b = augment(image, mask, aug, Preprocessing(), torch.Generator().manual_seed(5))
    c = augment(image, mask, aug, Preprocessing(), torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 48, 48) and a[1].shape == (48, 48)
    assert set(torch.unique(a[1]).tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}


def test_crop_pads_image_with_zero_and_mask_with_ignore_and_keeps_pixels_aligned():
    image = torch.arange(12.0).view(1, 3, 4).expand(3, 3, 4).clone()
    mask = torch.arange(12).view(3, 4)
    out_image, out_mask = random_crop(image, mask, 6, torch.Generator().manual_seed(1))
    assert out_image.shape == (3, 6, 6) and out_mask.shape == (6, 6)
    padded = out_mask == IGNORE_INDEX
    assert int(padded.sum()) == 36 - 12
    assert bool((out_image[:, padded] == 0).all())
    assert torch.equal(out_image[0][~padded], out_mask[~padded].float())


def test_flip_and_resize_move_image_and_mask_together():
    image, mask = _image_and_mask(16, 16)
    image[0] = mask.float()  # channel 0 carries the labels
    aug = Augmentation(resize_long=(32, 32), flip=True, jitter=(0, 0, 0, 0), crop=None)
    for seed in range(4):
        out, out_mask = augment(image, mask, aug, Preprocessing.from_scale("x"),
                                torch.Generator().manual_seed(seed))
        assert out.shape == (3, 32, 32)
        # nearest-upsampled labels agree with the bilinear image where the labels are flat
        flat = torch.nn.functional.max_pool2d(out_mask[None, None].float(), 3, 1, 1)[0, 0] == \
            -torch.nn.functional.max_pool2d(-out_mask[None, None].float(), 3, 1, 1)[0, 0]
        assert torch.allclose(out[0][flat], out_mask[flat].float(), atol=1e-4)


def test_preprocessing_rules():
    x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1)
    assert torch.allclose(Preprocessing.from_scale("x*2-1")(x).flatten(),
                          torch.tensor([-1.0, 0.0, 1.0]))
    imagenet = Preprocessing.imagenet()
    assert imagenet.mean == (0.485, 0.456, 0.406)
    assert Preprocessing.from_json(imagenet.to_json()) == imagenet
    with pytest.raises(ValueError, match="x\\*2-1"):
        Preprocessing.from_scale("x/255")


def test_image_tensor_and_eval_resize():
    pil = Image.new("RGB", (40, 20), (255, 0, 0))
    t = image_tensor(pil)
    assert t.shape == (3, 20, 40) and float(t[0].min()) == 1.0
    assert torch.equal(image_tensor(torch.full((3, 2, 2), 255, dtype=torch.uint8)),
                       torch.ones(3, 2, 2))
    out = resize_and_pad(t, 32)
    assert out.shape == (3, 32, 32)
    assert float(out[:, 16:].abs().sum()) == 0.0  # padding below the 32x16 image
    with pytest.raises(ValueError, match="PIL image"):
        image_tensor(torch.zeros(2, 2))


def test_transformed_seeds_by_epoch_and_index_only():
    base = [torch.zeros(1) for _ in range(3)]
    data = Transformed(base, lambda item, g: float(torch.rand((), generator=g)), seed=1)
    first = [data[i] for i in range(3)]
    assert [data[i] for i in (2, 0, 1)] == [first[2], first[0], first[1]]
    data.set_epoch(1)
    assert [data[i] for i in range(3)] != first
    assert len({sample_seed(0, e, i) for e in range(5) for i in range(100)}) == 500
