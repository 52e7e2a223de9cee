"""Reading images as a viewer shows them: EXIF orientation applied, 16-bit grey scaled to 8
bits; the same in every data-set reader (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loupe.data import open_dataset
from loupe.data.base import image_size, rgb_tensor
from loupe.io import load_rgb
from loupe.masks import save_mask_png

ORIENTATION = 0x0112


def sideways_photo(assets: Path, path: Path) -> np.ndarray:
    """The real photo ``cat_720p.jpg`` stored as a phone stores a portrait shot: pixels
    rotated 90 degrees counter-clockwise, EXIF orientation 6 ("rotate 90 CW to view"), saved
    losslessly at ``path``. Returns the upright pixels."""
    with Image.open(assets / "photos" / "cat_720p.jpg") as image:
        upright = image.convert("RGB")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    return np.asarray(upright)


def test_load_rgb_applies_exif_orientation_6(assets: Path, tmp_path: Path) -> None:
    upright = sideways_photo(assets, tmp_path / "portrait.png")
    with Image.open(tmp_path / "portrait.png") as raw:
        assert raw.size == (upright.shape[0], upright.shape[1])  # stored sideways
    loaded = np.asarray(load_rgb(tmp_path / "portrait.png"))
    assert loaded.shape == upright.shape
    assert np.array_equal(loaded, upright)
    assert image_size(tmp_path / "portrait.png") == (upright.shape[1], upright.shape[0])


def test_jpeg_with_orientation_6_reads_upright(assets: Path, tmp_path: Path) -> None:
    with Image.open(assets / "photos" / "cat_720p.jpg") as image:
        upright = image.convert("RGB")
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "p.jpg", quality=95, exif=exif)
    loaded = np.asarray(load_rgb(tmp_path / "p.jpg")).astype(np.int16)
    assert loaded.shape == np.asarray(upright).shape
    assert np.abs(loaded - np.asarray(upright)).mean() < 3  # JPEG re-encoding only


def test_folder_and_yolo_readers_apply_exif_orientation(assets: Path, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    upright = sideways_photo(assets, root / "images" / "cat.png")
    height, width = upright.shape[:2]
    mask = torch.zeros(height, width, dtype=torch.long)
    mask[: height // 2] = 1
    save_mask_png(root / "masks" / "cat.png", mask)
    sample = open_dataset("folder", root, num_classes=2)[0]
    assert np.array_equal(rgb_tensor(sample.image).permute(1, 2, 0).numpy(), upright)

    yolo = tmp_path / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "labels" / "train").mkdir(parents=True)
    sideways_photo(assets, yolo / "images" / "train" / "cat.png")
    (yolo / "labels" / "train" / "cat.txt").write_text("0 0 0 1 0 1 0.5 0 0.5\n")
    data = open_dataset("yolo", yolo, "train", names=["cat"])
    for masks_only in (False, True):
        data.images = not masks_only
        item = data[0]
        assert tuple(item.mask.shape) == (height, width)  # the upright size, also from headers
        assert int(item.mask[: height // 2 - 1].min()) == 1 and int(item.mask[-1].max()) == 0


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I;16B", ".tif"),
                                             ("I", ".tif")])
def test_16_bit_grey_is_scaled_not_saturated(tmp_path: Path, mode: str, suffix: str) -> None:
    """A 16-bit file (as a scanner, a microscope or a depth camera writes it) is read with
    its values scaled to 8 bits, not clipped to white at 255."""
    values = np.array([[0, 257, 32896], [65535, 514, 1000]], dtype=np.uint16)
    if mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    else:
        order = ">u2" if mode.endswith("B") else "<u2"
        image = Image.frombytes(mode, (3, 2), values.astype(order).tobytes())
    image.save(tmp_path / f"deep{suffix}")
    with Image.open(tmp_path / f"deep{suffix}") as stored:
        assert stored.mode == mode
    expected = np.rint(values / 257).astype(np.uint8)  # 0, 1, 128, 255, 2, 4
    got = np.asarray(load_rgb(tmp_path / f"deep{suffix}"))
    assert np.array_equal(got, np.repeat(expected[..., None], 3, axis=2))
