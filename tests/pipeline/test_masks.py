"""``loupe masks``: paletted PNGs equal to the thresholding rules, resumable, with the CRF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loupe.cli import main
from loupe.io import save_npz
from loupe.mapsets.files import map_file_arrays
from loupe.masks import confident_masks, crf_refine_mask, masks_from_maps, voc_palette

from .conftest import SYNTHETIC, read_npz, tree_bytes


@pytest.fixture(scope="module")
def maps_folder(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("masks") / "maps"
    assert main(["maps", *SYNTHETIC, "--model", str(tiny_run), "--out", str(out),
                 "--limit", "4"]) == 0
    return out


def restored(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    stored = read_npz(path)
    return torch.from_numpy(stored["maps"].astype(np.float32)), torch.from_numpy(
        stored["classes"])


def test_masks_follow_the_background_threshold_rule(maps_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "masks"
    assert main(["masks", "--maps", str(maps_folder), "--out", str(out), "--threshold", "0.3",
                 "--no-progress"]) == 0
    files = sorted(maps_folder.glob("*.npz"))
    assert sorted(p.stem for p in out.glob("*.png")) == [p.stem for p in files]
    for path in files:
        maps, classes = restored(path)
        with Image.open(out / f"{path.stem}.png") as image:
            assert image.mode == "P"
            assert image.getpalette()[: 3 * 21] == list(voc_palette()[: 3 * 21])
            mask = torch.from_numpy(np.array(image)).long()
        assert torch.equal(mask, masks_from_maps(maps, classes, 0.3))
        # independent check of the rule: background unless the best max-normalised map > 0.3
        positive = maps.clamp(min=0)
        scores = positive / positive.amax((-2, -1), keepdim=True).clamp(min=1e-30)
        best, where = scores.max(0)
        expected = torch.where(best > 0.3, classes[where], 0)
        assert torch.equal(mask, expected)


def test_confident_masks_and_resume(maps_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "confident"
    args = ["masks", "--maps", str(maps_folder), "--out", str(out), "--confident", "0.6", "0.2",
            "--no-progress"]
    assert main(args) == 0
    first = tree_bytes(out)
    for path in sorted(maps_folder.glob("*.npz")):
        maps, classes = restored(path)
        mask = torch.from_numpy(np.array(Image.open(out / f"{path.stem}.png"))).long()
        assert torch.equal(mask, confident_masks(maps, classes, 0.6, 0.2))
        assert set(mask.unique().tolist()) <= set(classes.tolist()) | {0, 255}
    next(out.glob("*.png")).unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "masks: 1 written, 3 already" in capsys.readouterr().out
    assert tree_bytes(out) == first
    assert main([*args[:-3], "0.7", "0.2", "--no-progress"]) == 2  # other settings, same folder
    assert "masks.json" in capsys.readouterr().err


def test_crf_refinement_with_the_data_set_images(maps_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("pydensecrf.densecrf")
    from loupe.data.synthetic import make_synthetic

    out = tmp_path / "crf"
    assert main(["masks", "--maps", str(maps_folder), "--out", str(out), "--threshold", "0.3",
                 "--crf", *SYNTHETIC]) == 0
    data = make_synthetic(6, 32, 0)
    for index, sample_id in enumerate(data.ids[:4]):
        maps, classes = restored(maps_folder / f"{sample_id}.npz")
        expected = crf_refine_mask(data.images[index], masks_from_maps(maps, classes, 0.3))
        mask = torch.from_numpy(np.array(Image.open(out / f"{sample_id}.png"))).long()
        assert torch.equal(mask, expected)


def test_crf_with_an_image_folder(tmp_path: Path) -> None:
    pytest.importorskip("pydensecrf.densecrf")
    maps_dir, images = tmp_path / "maps", tmp_path / "images"
    images.mkdir()
    image = torch.zeros(3, 24, 24, dtype=torch.uint8)
    image[:, :, 12:] = 200  # a bright right half
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(images / "x.png")
    maps = torch.zeros(1, 24, 24)
    maps[0, :, 10:] = 1.0  # the map spills two columns over the edge
    save_npz(maps_dir / "x.npz", **map_file_arrays(maps, torch.tensor([3]),
                                                   torch.zeros(1), 3))
    out = tmp_path / "out"
    assert main(["masks", "--maps", str(maps_dir), "--out", str(out), "--threshold", "0.5",
                 "--crf", "--images", str(images), "--no-progress"]) == 0
    mask = torch.from_numpy(np.array(Image.open(out / "x.png"))).long()
    assert torch.equal(mask, crf_refine_mask(image, masks_from_maps(maps, torch.tensor([3]),
                                                                     0.5)))
    assert (mask[:, 12:] == 3).all() and (mask[:, :10] == 0).all()


def test_masks_errors(maps_folder: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        (["masks", "--maps", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
         "empty maps folder"),
        (["masks", "--maps", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
         "folder not found"),
        (["masks", "--maps", str(maps_folder), "--out", str(tmp_path / "o"), "--crf"],
         "--crf needs the images"),
        (["masks", "--maps", str(maps_folder), "--out", str(tmp_path / "o"), "--crf",
          "--images", str(tmp_path / "empty")], "no image file for"),
        (["masks", "--maps", str(maps_folder), "--out", str(tmp_path / "o"), "--confident",
          "0.2", "0.6"], "BG <= FG"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "y.npz").write_bytes(b"not a zip file")
    assert main(["masks", "--maps", str(broken), "--out", str(tmp_path / "o2")]) == 2
    assert f"{broken / 'y.npz'}: cannot read map file" in capsys.readouterr().err
