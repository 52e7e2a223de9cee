"""The synthetic generator: determinism, masks that match labels, the badge design, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loupe.data.base import Sample
from loupe.data.synthetic import (
    SyntheticConfig,
    class_codes,
    hsv_to_rgb,
    make_synthetic,
    render_scenes,
)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(48, size=64, seed=3)


def test_same_seed_same_data_and_different_seed_different_data():
    a, b = make_synthetic(12, size=48, seed=7), make_synthetic(12, size=48, seed=7)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.masks, b.masks)
    assert torch.equal(a.labels, b.labels)
    assert a.ids == b.ids
    c = make_synthetic(12, size=48, seed=8)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.masks, c.masks)


def test_samples_follow_the_data_set_conventions(data):
    sample = data[5]
    assert isinstance(sample, Sample)
    assert sample.image.size == (64, 64) and sample.image.mode == "RGB"
    assert np.array_equal(np.asarray(sample.image), data.images[5].permute(1, 2, 0).numpy())
    assert sample.labels.dtype == torch.float32 and sample.labels.shape == (6,)
    assert sample.mask.dtype == torch.long and sample.mask.shape == (64, 64)
    assert data.num_classes == 6 and data.class_names[0] == "background"
    assert len(data) == 48 and len(set(data.ids)) == 48
    with pytest.raises(IndexError, match="out of range"):
        data[48]


def test_labels_are_exactly_the_classes_visible_in_the_masks(data):
    assert int(data.masks.min()) >= 0 and int(data.masks.max()) <= 5
    for index in range(len(data)):
        present = torch.zeros(6)
        present[torch.unique(data.masks[index])] = 1
        present[0] = 0
        assert torch.equal(data.labels[index], present), data.ids[index]
    assert bool((data.labels.sum(1) >= 1).all()), "every image has an object"
    assert bool((data.labels[:, 0] == 0).all())
    assert float(data.labels.sum(1).max()) >= 2, "some images are multi-label"
    assert bool((data.labels[:, 1:].sum(0) > 0).all()), "every class occurs"


def test_boxes_enclose_each_visible_object(data):
    for index in range(len(data)):
        sample = data[index]
        assert set(sample.box_labels.tolist()) == set(
            torch.nonzero(sample.labels).flatten().tolist())
        for j, (box, label) in enumerate(zip(sample.boxes, sample.box_labels, strict=True)):
            x0, y0, x1, y1 = box.long().tolist()
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            inside = sample.mask[y0:y1, x0:x1] == label
            assert bool(inside.any())
            assert bool(inside[0].any() and inside[-1].any() and inside[:, 0].any()
                        and inside[:, -1].any()), f"box {j} of {sample.id} is not tight"


def test_class_codes_are_distinct_and_fixed():
    codes = class_codes(5)
    assert codes.shape == (5, 3, 3)
    flat = codes.flatten(1).int()
    distances = (flat[:, None] != flat[None]).sum(-1)
    assert int(distances[~torch.eye(5, dtype=torch.bool)].min()) >= 3
    assert torch.equal(codes, class_codes(5))
    assert torch.equal(class_codes(3), codes[:3])


def test_each_visible_badge_shows_its_class_code():
    size = 96
    scenes = render_scenes(24, size, seed=11)
    codes = class_codes(5)
    checked = 0
    for i in range(24):
        for j, cls in enumerate(scenes.object_classes[i].tolist()):
            if cls < 0:
                continue
            x0, y0, x1, y1 = scenes.badges[i, j].tolist()
            cell = (x1 - x0) / 3
            for row in range(3):
                for col in range(3):
                    px = int(x0 + (col + 0.5) * cell)
                    py = int(y0 + (row + 0.5) * cell)
                    if int(scenes.instances[i, py, px]) != j:
                        continue  # hidden by a later object
                    assert int(scenes.masks[i, py, px]) == cls + 1
                    grey = scenes.images[i, :, py, px].float()
                    expected = 242.0 if bool(codes[cls, row, col]) else 13.0
                    assert float((grey - expected).abs().max()) < 40, (i, j, row, col)
                    checked += 1
    assert checked > 24 * 9


def test_badge_masks_are_the_visible_parts_of_the_badge_squares():
    scenes = render_scenes(24, 96, seed=11)
    y, x = torch.meshgrid(torch.arange(96) + 0.5, torch.arange(96) + 0.5, indexing="ij")
    expected = torch.zeros_like(scenes.badge_masks)
    for i in range(24):
        for j, cls in enumerate(scenes.object_classes[i].tolist()):
            if cls < 0:
                continue
            x0, y0, x1, y1 = scenes.badges[i, j].tolist()
            square = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
            expected[i] |= square & (scenes.instances[i] == j)
    assert torch.equal(scenes.badge_masks, expected)
    assert bool(scenes.badge_masks.any())
    assert bool((scenes.masks[scenes.badge_masks] > 0).all())
    # every badge pixel is black or white, whatever the body colour around it
    values = scenes.images.permute(0, 2, 3, 1)[scenes.badge_masks].float()  # (P, 3)
    nearest = torch.where(values.mean(1, keepdim=True) > 127, 242.0, 13.0)
    assert float((values - nearest).abs().max()) < 40


def test_shared_bodies_do_not_depend_on_the_class():
    def render(classes: int, shared: bool):
        config = SyntheticConfig(num_classes=classes, shared_bodies=shared)
        return render_scenes(16, 64, seed=4, config=config)

    five, three = render(5, True), render(3, True)
    assert torch.equal(five.badge_masks, three.badge_masks)
    assert torch.equal(five.masks > 0, three.masks > 0)
    outside = ~five.badge_masks[:, None].expand_as(five.images)
    assert torch.equal(five.images[outside], three.images[outside])  # only badges differ
    assert not torch.equal(five.images, three.images)
    five, three = render(5, False), render(3, False)
    outside = ~five.badge_masks[:, None].expand_as(five.images)
    assert not torch.equal(five.images[outside], three.images[outside])


def test_distractors_are_background_bodies_and_scenes_are_seeded():
    config = SyntheticConfig(distractors=(1, 2), shared_bodies=True)
    a, b = render_scenes(16, 64, 5, config), render_scenes(16, 64, 5, config)
    for field in ("images", "masks", "badge_masks", "distractor_masks", "object_classes"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.images, render_scenes(16, 64, 6, config).images)
    assert bool((a.masks[a.distractor_masks] == 0).all())
    visible = a.distractor_masks.flatten(1).sum(1)
    assert int((visible > 0).sum()) >= 12, "most images show a distractor"
    assert float(visible.float().mean()) > 0.05 * 64 * 64, "distractors are body-sized"
    plain = render_scenes(4, 64, 5, SyntheticConfig(distractors=(0, 0)))
    assert not bool(plain.distractor_masks.any())
    data = make_synthetic(4, 64, 5, config)
    assert torch.equal(data.badge_mask(2), data.badge_masks[2])
    assert torch.equal(data.distractor_masks, render_scenes(4, 64, 5, config).distractor_masks)


def test_badges_are_small_and_bodies_large(data):
    # the design's promise (docs/synthetic-data.md): a badge covers at most 15% of its object
    pairs = [(data.masks[i] == c, data.badge_masks[i] & (data.masks[i] == c))
             for i in range(len(data)) for c in torch.nonzero(data.labels[i]).flatten().tolist()]
    shares = torch.tensor([float(badge.sum()) / float(obj.sum()) for obj, badge in pairs])
    assert 0.08 < float(shares.mean()) <= 0.15
    assert float((shares > 0).float().mean()) > 0.9, "almost every object shows its badge"


def test_hsv_to_rgb_matches_colorsys():
    import colorsys

    h, s, v = torch.rand(3, 50, generator=torch.Generator().manual_seed(0))
    ours = hsv_to_rgb(h, s, v)
    expected = torch.tensor([colorsys.hsv_to_rgb(*t) for t in zip(h.tolist(), s.tolist(),
                                                                    v.tolist(), strict=True)])
    assert torch.allclose(ours, expected.float(), atol=1e-6)


def test_options_change_the_scenes():
    one = make_synthetic(16, size=48, seed=0, config=SyntheticConfig(objects=(1, 1)))
    assert bool((one.object_classes >= 0).sum(1).eq(1).all())
    three = make_synthetic(6, size=48, seed=0, config=SyntheticConfig(num_classes=3))
    assert three.num_classes == 4 and int(three.masks.max()) <= 3
    rect = make_synthetic(4, size=(40, 56), seed=0)
    assert rect.images.shape == (4, 3, 40, 56) and rect[0].image.size == (56, 40)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (SyntheticConfig(num_classes=0), "num_classes"),
        (SyntheticConfig(objects=(2, 1)), "objects"),
        (SyntheticConfig(body_radius=(0.3, 0.2)), "body_radius"),
        (SyntheticConfig(badge_size=0.5), "badge_size"),
        (SyntheticConfig(clutter=(-1, 2)), "clutter"),
        (SyntheticConfig(distractors=(2, 1)), "distractors"),
        (SyntheticConfig(noise=-0.1), "noise"),
    ],
)
def test_bad_parameters_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic(2, size=32, seed=0, config=config)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n >= 1"):
        make_synthetic(0, size=32)
    with pytest.raises(ValueError, match="16x16"):
        make_synthetic(2, size=8)
