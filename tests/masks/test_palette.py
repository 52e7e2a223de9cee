"""VOC palette and paletted mask PNGs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from loupe.masks import colorize_mask, load_mask_png, save_mask_png, voc_palette


def test_palette_known_colours():
    palette = voc_palette()
    assert len(palette) == 768
    colour = lambda i: tuple(palette[3 * i : 3 * i + 3])  # noqa: E731
    assert colour(0) == (0, 0, 0)
    assert colour(1) == (128, 0, 0)  # aeroplane
    assert colour(15) == (192, 128, 128)  # person
    assert colour(20) == (0, 64, 128)  # tv/monitor
    assert colour(255) == (224, 224, 192)  # ignore


def test_palette_equals_real_voc_file(assets):
    path = next((assets / "voc" / "SegmentationClassAug").glob("*.png"))
    with Image.open(path) as image:
        assert image.mode == "P"
        stored = image.getpalette()
    assert list(voc_palette()) == stored[:768]


def test_real_voc_mask_loads_as_indices(assets):
    ids = (assets / "voc" / "voc12" / "train.txt").read_text().split()
    mask = load_mask_png(assets / "voc" / "SegmentationClassAug" / f"{ids[0]}.png")
    assert mask.dtype == torch.long and mask.dim() == 2
    values = set(mask.unique().tolist())
    assert values <= set(range(21)) | {255} and len(values - {0, 255}) >= 1


def test_png_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 21, (17, 23), generator=generator)
    mask[0, :5] = 255
    path = tmp_path / "sub" / "mask.png"
    save_mask_png(path, mask)
    with Image.open(path) as image:
        assert image.mode == "P" and image.size == (23, 17)
        assert image.getpalette()[:768] == list(voc_palette())
    assert torch.equal(load_mask_png(path), mask)
    assert [p.name for p in path.parent.iterdir()] == ["mask.png"]  # no temp file left


def test_save_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="bad.png.*2D"):
        save_mask_png(path, torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="bad.png.*0..255"):
        save_mask_png(path, torch.tensor([[0, 256]]))
    with pytest.raises(ValueError, match="bad.png.*integer"):
        save_mask_png(path, torch.zeros(4, 4))
    assert not path.exists()


def test_overwrite_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "m.png"
    save_mask_png(path, torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        save_mask_png(path, torch.full((3, 3), 300))
    assert torch.equal(load_mask_png(path), torch.ones(3, 3, dtype=torch.long))


def test_load_errors_name_the_file(tmp_path):
    rgb = tmp_path / "colour.png"
    Image.new("RGB", (4, 4), (128, 0, 0)).save(rgb)
    with pytest.raises(ValueError, match="colour.png.*paletted or grayscale"):
        load_mask_png(rgb)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png: cannot read mask"):
        load_mask_png(junk)
    with pytest.raises(FileNotFoundError):
        load_mask_png(tmp_path / "missing.png")


def test_colorize_mask():
    colours = colorize_mask(torch.tensor([[0, 1], [15, 255]]))
    assert colours.dtype == torch.uint8 and colours.shape == (2, 2, 3)
    assert colours.tolist() == [[[0, 0, 0], [128, 0, 0]], [[192, 128, 128], [224, 224, 192]]]
