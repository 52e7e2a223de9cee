"""``overlays.png`` of ``loupe evaluate``: every image with its own aspect ratio (not squeezed
into a square) and a legend of the class colours that appear."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import loupe.reports.plots as plots
from loupe.cli import main
from loupe.masks.palette import colorize_mask

from .conftest import FOLDER_SIZES


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The matplotlib figures the plots would write (the files are written too)."""
    figures = []
    save = plots._save

    def keep(figure, path):
        figures.append((Path(path).name, figure))
        save(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_overlays_keep_the_aspect_ratio_and_have_a_class_legend(folder_root, tiny_run,
                                                                tmp_path, drawn):
    maps = tmp_path / "maps"
    data = ["--dataset", "folder", "--root", str(folder_root), "--no-progress"]
    assert main(["maps", *data, "--model", str(tiny_run), "--out", str(maps)]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--maps", str(maps), *data, "--bootstrap", "0", "--overlays", "5",
                 "--out", str(out)]) == 0
    assert (out / "overlays.png").is_file()
    figure = dict(drawn)["overlays.png"]
    rows = figure.axes[0].get_gridspec().nrows
    assert rows == len(FOLDER_SIZES)
    columns = figure.axes[0].get_gridspec().ncols
    assert columns == 3  # image, ground truth, maps
    for row, (width, height) in enumerate(FOLDER_SIZES.values()):
        for col in range(columns):
            shown = figure.axes[row * columns + col].get_images()[0].get_array()
            assert max(shown.shape[:2]) == 160  # a readable size, longer side 160
            assert abs(shown.shape[0] / shown.shape[1] - height / width) < 0.05, (row, col)
    # the legend names the classes drawn (ground truth and masks), in their palette colours
    (legend,) = figure.legends
    names = [text.get_text() for text in legend.get_texts()]
    assert names[0] == "background" and set(names) <= {"background", "ignore"} | {
        f"class{k}" for k in range(1, 6)}
    assert "ignore" in names  # the 255 border of image a
    patches = legend.get_patches()
    labels = [0 if n == "background" else 255 if n == "ignore" else int(n[5:]) for n in names]
    for patch, label in zip(patches, labels, strict=True):
        expected = colorize_mask(torch.tensor([label]))[0].float() / 255
        assert tuple(round(c, 3) for c in patch.get_facecolor()[:3]) == tuple(
            round(c, 3) for c in expected.tolist())
