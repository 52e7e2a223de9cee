"""Outputs that must not be silently wrong or stale (issue 13): map files with NaN/Inf or
classes out of range, the class map ``maps.json`` records, missing map files found before the
pass, run folders that keep only their own run's files, masks of remade maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from loupe.cli import main

from .conftest import FOLDER_SIZES, SYNTHETIC, read_npz


@pytest.fixture(scope="module")
def made(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``loupe maps`` of the synthetic set (6 images, classes 0..5) in ``made/maps``."""
    root = tmp_path_factory.mktemp("outputs")
    assert main(["maps", *SYNTHETIC, "--model", str(tiny_run), "--out", str(root / "maps")]) == 0
    return root / "maps"


def copy_with(folder: Path, to: Path, sample: int, **changes: np.ndarray) -> Path:
    """A copy of a maps folder with arrays of its ``sample``-th file replaced."""
    shutil.copytree(folder, to)
    path = sorted(to.glob("*.npz"))[sample]
    arrays = {**read_npz(path), **changes}
    path.unlink()
    np.savez(path, **arrays)  # as other code might write it: no checks
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_map_files_are_refused_by_evaluate_and_masks(made: Path, tmp_path: Path,
                                                                capsys, value: float) -> None:
    maps = read_npz(sorted(made.glob("*.npz"))[2])["maps"].copy()
    maps[0, :4, :4] = value
    bad = copy_with(made, tmp_path / "bad", 2, maps=maps)
    kind = "NaN" if value != value else "infinite"
    for args in (["evaluate", *SYNTHETIC, "--maps", str(bad.parent), "--out",
                  str(tmp_path / "eval"), "--bootstrap", "0"],
                 ["masks", "--maps", str(bad.parent), "--out", str(tmp_path / "masks")]):
        assert main(args) == 2, args[0]
        err = capsys.readouterr().err
        assert f"{bad}: map file holds" in err and f"16 {kind}" in err, err
    assert not (tmp_path / "eval" / "results.json").exists()


def test_masks_refuse_a_class_outside_the_data_set(made: Path, tmp_path: Path, capsys) -> None:
    maps = read_npz(sorted(made.glob("*.npz"))[1])["maps"]
    bad = copy_with(made, tmp_path / "bad", 1, classes=np.full(len(maps), 99, np.int64))
    assert main(["masks", "--maps", str(bad.parent), "--out", str(tmp_path / "masks")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: map classes must lie in 1..5" in err and "[99]" in err
    assert not (tmp_path / "masks" / f"{bad.stem}.png").exists()


def test_evaluate_lists_missing_map_files_before_the_pass(made: Path, tmp_path: Path,
                                                          capsys) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(made, partial)
    ids = sorted(p.stem for p in partial.glob("*.npz"))
    for sample_id in ids[3:]:
        (partial / f"{sample_id}.npz").unlink()
    (partial / f"{ids[0]}.npz").write_bytes(b"damaged")  # would fail first in a pass
    assert main(["evaluate", *SYNTHETIC, "--maps", str(partial), "--out",
                 str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert f"--maps {partial}: no map file for 3 of the 6 images" in err
    assert all(repr(i) in err for i in ids[3:]) and "damaged" not in err


def test_evaluate_replaces_the_files_of_an_older_run(made: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    common = ["evaluate", *SYNTHETIC, "--maps", str(made), "--bootstrap", "0", "--out", str(out)]
    assert main([*common, "--overlays", "2"]) == 0
    assert (out / "overlays.png").is_file()
    (out / "notes.txt").write_text("mine")
    assert main([*common, "--overlays", "0"]) == 0
    assert not (out / "overlays.png").exists()  # not the old run's picture under new numbers
    assert sorted(p.name for p in out.iterdir()) == ["miou_vs_threshold.png", "notes.txt",
                                                     "report.md", "results.json"]


def test_commands_refuse_a_folder_of_something_else(made: Path, tmp_path: Path, tiny_run: Path,
                                                    capsys) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "holiday.jpg").write_bytes(b"x")
    cases = [
        (["evaluate", *SYNTHETIC, "--maps", str(made), "--out", str(made)], "an evaluation run"),
        (["masks", "--maps", str(made), "--out", str(made)], "a masks run"),
        (["maps", *SYNTHETIC, "--model", str(tiny_run), "--out", str(stray)], "a maps run"),
    ]
    for args, what in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "not empty" in err and f"not {what}" in err and "new or empty folder" in err
    assert sorted(p.name for p in stray.iterdir()) == ["holiday.jpg"]


def test_masks_of_remade_maps_are_not_resumed(tiny_run: Path, tmp_path: Path, capsys) -> None:
    maps, masks = tmp_path / "maps", tmp_path / "masks"
    make = ["maps", *SYNTHETIC, "--model", str(tiny_run), "--limit", "2", "--out", str(maps)]
    assert main(make) == 0
    assert main(["masks", "--maps", str(maps), "--out", str(masks)]) == 0
    shutil.rmtree(maps)
    assert main([*make, "--method", "layercam"]) == 0
    capsys.readouterr()
    assert main(["masks", "--maps", str(maps), "--out", str(masks)]) == 2
    err = capsys.readouterr().err
    assert "maps in --maps were remade" in err and "stale" in err


def class_map_maps(tiny_run: Path, root: Path, out: Path, class_map: Path | None) -> None:
    args = ["maps", "--dataset", "folder", "--root", str(root), "--model", str(tiny_run),
            "--no-progress", "--out", str(out)]
    assert main([*args, "--class-map", str(class_map)] if class_map else args) == 0


def test_evaluate_applies_the_class_map_the_maps_record(tiny_run: Path, folder_root: Path,
                                                        tmp_path: Path, capsys) -> None:
    table = tmp_path / "map.json"  # class3 and class5 have no counterpart
    table.write_text(json.dumps({"class1": [0, 3], "class2": [1], "class4": [2, 4]}))
    mapped, plain = tmp_path / "mapped", tmp_path / "plain"
    class_map_maps(tiny_run, folder_root, mapped, table)
    class_map_maps(tiny_run, folder_root, plain, None)
    masks = tmp_path / "masks"
    assert main(["masks", "--maps", str(mapped), "--out", str(masks)]) == 0
    common = ["evaluate", "--dataset", "folder", "--root", str(folder_root), "--bootstrap", "0",
              "--overlays", "0", "--no-progress"]

    def evaluate(out: str, *extra: str) -> dict:
        assert main([*common, "--out", str(tmp_path / out), *extra]) == 0
        return json.loads((tmp_path / out / "results.json").read_text())

    recorded = evaluate("recorded", "--maps", str(mapped), "--masks", str(masks))
    given = evaluate("given", "--maps", str(mapped), "--masks", str(masks), "--class-map",
                     str(table))
    assert recorded["ignored_classes"] == given["ignored_classes"] == ["class3", "class5"]
    for name in ("mapped", "masks"):
        assert recorded["methods"][name]["miou"] == given["methods"][name]["miou"]
        assert recorded["methods"][name]["confusion"] == given["methods"][name]["confusion"]
    described = json.loads((mapped / "maps.json").read_text())["correspondence"]
    assert described["without_counterpart"] == ["class3", "class5"]
    assert recorded["class_map_from"] == "maps.json"
    assert "as recorded in maps.json" in (tmp_path / "recorded" / "report.md").read_text()
    # folders made with and without the class map: no silent choice
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "mixed"), "--maps", str(mapped),
                 str(plain)]) == 2
    err = capsys.readouterr().err
    assert "different class maps" in err and "give --class-map" in err
    assert f"mapped: --class-map {table}" in err and "plain: no class map" in err
    explicit = evaluate("explicit", "--maps", str(mapped), str(plain), "--class-map", str(table))
    assert explicit["ignored_classes"] == ["class3", "class5"]
    assert len(FOLDER_SIZES) == explicit["images"]
