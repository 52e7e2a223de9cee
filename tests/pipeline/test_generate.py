"""``loupe maps``: the IRN multi-scale sum, target selection, the file format and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from loupe.cli import main
from loupe.data.mapping import mapped_scores
from loupe.mapsets.files import map_file_arrays
from loupe.mapsets.generate import batch_targets, multiscale_maps
from loupe.models import load_model

from .conftest import FOLDER_SIZES, SYNTHETIC, read_npz, tree_bytes


class AffineCAMNet(nn.Module):
    """1x1 conv -> GAP -> bias-free linear: CAM_k(x) = W_k (A x + b) is affine in each pixel,
    so its maps commute with resizing and flipping (the basis of the checks below)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.features = nn.Conv2d(3, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))

    def pixel_cams(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` CAMs of every class, computed from the weights directly."""
        a = torch.einsum("oc,bchw->bohw", self.features.weight[:, :, 0, 0], x)
        a = a + self.features.bias[None, :, None, None]
        return torch.einsum("ko,bohw->bkhw", self.fc.weight, a)


def test_multiscale_flip_sum_matches_the_irn_formula() -> None:
    model = AffineCAMNet().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[2, 0], [1, -1]])
    sizes = [(20, 30), (16, 16)]
    scales = (1.0, 0.5, 1.5)
    got = multiscale_maps(model, x, targets, "cam", sizes, scales=scales, flip=True)

    cams = model.pixel_cams(x).detach()  # (B, 3, 12, 12)
    for i, size in enumerate(sizes):
        expected = torch.zeros(3, *size)
        for s in scales:
            scaled = (round(12 * s), round(12 * s))
            down = F.interpolate(cams[i:i + 1], size=scaled, mode="bilinear",
                                 align_corners=False, antialias=s < 1)
            up = F.interpolate(down, size=size, mode="bilinear", align_corners=False)[0]
            # the flipped image's map, flipped back, equals the map (the net is per-pixel)
            expected += 2 * up
        for j, cls in enumerate(targets[i].tolist()):
            want = expected[cls] if cls >= 0 else torch.zeros(size)
            torch.testing.assert_close(got[i][j], want, atol=2e-4, rtol=1e-4)
    assert [tuple(m.shape) for m in got] == [(2, 20, 30), (2, 16, 16)]


def test_single_scale_without_flip_is_the_upsampled_map() -> None:
    model = AffineCAMNet().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    got = multiscale_maps(model, x, torch.tensor([[1]]), "cam", [(8, 8)])[0]
    torch.testing.assert_close(got[0], model.pixel_cams(x)[0, 1].detach(), atol=1e-5, rtol=1e-5)


def test_batch_targets_from_labels_topk_and_a_class_map() -> None:
    logits = torch.tensor([[1.0, 5.0, -2.0, 7.0], [4.0, -1.0, 3.0, 0.0]])
    mapping = ((), (0,), (1, 3), ())  # data class 3 has no counterpart
    labels = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    chosen = batch_targets(logits, labels, mapping)
    assert chosen.classes.tolist() == [[1, 2, 3], [2, -1, -1]]
    assert chosen.model_classes.tolist() == [[0, 3, -1], [3, -1, -1]]
    assert chosen.scores[0, :2].tolist() == [1.0, 7.0]
    assert chosen.scores[0, 2] == float("-inf") and chosen.scores[1, 0] == 0.0
    assert chosen.predicted.tolist() == [2, 1]  # 7 (class 2 via output 3); 4 (class 1) > 0
    top = batch_targets(logits, labels, mapping, topk=2)
    assert top.classes.tolist() == [[2, 1], [1, 2]]
    assert top.model_classes.tolist() == [[3, 0], [0, 3]]
    none = batch_targets(logits, torch.zeros(2, 4), mapping)
    assert none.classes.shape == (2, 0)


def test_map_file_arrays_scale_each_map_by_its_peak() -> None:
    maps = torch.tensor([[[1e-6, -3e-6], [2e-6, 0.0]], [[0.0, 0.0], [0.0, 0.0]],
                         [[5e5, 1.0], [-2.0, 3.0]]])
    arrays = map_file_arrays(maps, torch.tensor([3, 7, 9]), torch.tensor([0.5, 1.0, 2.0]), 7)
    assert arrays["maps"].dtype == np.float16 and arrays["classes"].dtype == np.int64
    assert arrays["peak"].tolist() == pytest.approx([3e-6, 1.0, 5e5])
    restored = arrays["maps"].astype(np.float32) * arrays["peak"][:, None, None]
    # float16 keeps ~3 significant digits relative to each map's own peak, at any magnitude
    error = np.abs(restored - maps.numpy()) / arrays["peak"][:, None, None]
    assert error.max() < 1e-3
    assert np.abs(arrays["maps"]).max(axis=(1, 2)).tolist() == [1.0, 0.0, 1.0]
    assert int(arrays["predicted"]) == 7 and arrays["predicted"].shape == ()


def maps_args(run: Path, out: Path, *extra: str) -> list[str]:
    return ["maps", *SYNTHETIC, "--model", str(run), "--out", str(out), *extra]


def test_maps_cli_writes_one_file_per_image_for_its_labels(tiny_run: Path, tmp_path: Path
                                                           ) -> None:
    from loupe.data.synthetic import make_synthetic

    out = tmp_path / "maps"
    assert main(maps_args(tiny_run, out, "--batch-size", "4")) == 0
    data = make_synthetic(6, 32, 0)
    files = sorted(p.name for p in out.glob("*.npz"))
    assert files == sorted(f"{i}.npz" for i in data.ids)
    model, _ = load_model(tiny_run)
    for index, sample_id in enumerate(data.ids):
        stored = read_npz(out / f"{sample_id}.npz")
        labels = data.labels[index].nonzero().flatten().tolist()
        assert stored["classes"].tolist() == labels
        assert stored["maps"].shape == (len(labels), 32, 32)
        assert stored["maps"].dtype == np.float16
        x = (data.images[index].float()[None] / 255 - 0.5) / 0.25
        logits = model(x).detach()[0]
        np.testing.assert_allclose(stored["scores"], logits[[c - 1 for c in labels]].numpy(),
                                   rtol=1e-4, atol=1e-5)
        assert int(stored["predicted"]) == int(logits.argmax()) + 1
    described = json.loads((out / "maps.json").read_text())
    assert described["method"] == "gradcam" and described["scales"] == [1.0]
    assert described["correspondence"] == {"label_offset": 1}
    assert described["extent"] == {"images": 6}


def test_maps_rerun_skips_finished_images(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "maps"
    assert main(maps_args(tiny_run, out, "--limit", "3")) == 0
    before = tree_bytes(out)
    victim = sorted(out.glob("*.npz"))[1]
    victim.unlink()
    (out / f".{victim.name}.tmp-abc123").write_bytes(b"partial")  # a killed writer's
    capsys.readouterr()
    assert main(maps_args(tiny_run, out, "--limit", "3")) == 0
    assert "maps: 1 written, 2 already" in capsys.readouterr().out
    assert tree_bytes(out) == before  # the missing file is back, byte for byte; no temp file


def test_maps_refuses_to_resume_a_different_run(tiny_run: Path, tmp_path: Path, capsys
                                                ) -> None:
    out = tmp_path / "maps"
    assert main(maps_args(tiny_run, out, "--limit", "2")) == 0
    capsys.readouterr()
    assert main(maps_args(tiny_run, out, "--limit", "2", "--method", "layercam")) == 2
    err = capsys.readouterr().err
    assert str(out / "maps.json") in err and "method" in err and "'gradcam'" in err


def test_maps_resume_with_another_chunk_size(tiny_run: Path, tmp_path: Path, capsys) -> None:
    """chunk_size only bounds memory: a run resumes with another one, the same maps (up to
    float rounding: other batch compositions)."""
    out = tmp_path / "maps"
    args = ("--limit", "3", "--method", "smoothgrad", "--option", "n_samples=4")
    assert main(maps_args(tiny_run, out, *args, "chunk_size=3")) == 0
    victim = sorted(out.glob("*.npz"))[2]
    before = read_npz(victim)
    victim.unlink()
    capsys.readouterr()
    assert main(maps_args(tiny_run, out, *args, "chunk_size=1")) == 0
    assert "maps: 1 written, 2 already" in capsys.readouterr().out
    after = read_npz(victim)
    assert after["classes"].tolist() == before["classes"].tolist()
    np.testing.assert_allclose(after["maps"].astype(np.float32),
                               before["maps"].astype(np.float32), atol=2e-3)
    assert "chunk_size" not in json.loads((out / "maps.json").read_text())["options"]


def test_maps_irn_protocol_through_the_cli(tiny_run: Path, tmp_path: Path) -> None:
    from loupe.data.synthetic import make_synthetic

    out = tmp_path / "irn"
    args = maps_args(tiny_run, out, "--limit", "2", "--scales", "1.0", "0.5", "1.5", "--flip",
                     "--size", "40")
    assert main(args) == 0
    model, _ = load_model(tiny_run)
    data = make_synthetic(6, 32, 0)
    pixels = data.images[:2].float() / 255
    x = (F.interpolate(pixels, size=(40, 40), mode="bilinear", align_corners=False,
                       antialias=True) - 0.5) / 0.25
    labels = [data.labels[i].nonzero().flatten() for i in range(2)]
    width = max(len(v) for v in labels)
    targets = torch.full((2, width), -1)
    for i, v in enumerate(labels):
        targets[i, : len(v)] = v - 1
    expected = multiscale_maps(model, x, targets, "gradcam", [(32, 32)] * 2,
                               scales=(1.0, 0.5, 1.5), flip=True)
    for i, sample_id in enumerate(data.ids[:2]):
        stored = read_npz(out / f"{sample_id}.npz")
        restored = stored["maps"].astype(np.float32) * stored["peak"][:, None, None]
        want = expected[i][: len(labels[i])].numpy()
        np.testing.assert_allclose(restored, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


def test_maps_of_images_with_different_sizes(tiny_run: Path, folder_root: Path,
                                             tmp_path: Path) -> None:
    common = ["--dataset", "folder", "--root", str(folder_root), "--model", str(tiny_run),
              "--no-progress"]
    assert main(["maps", *common, "--out", str(tmp_path / "b4"), "--batch-size", "4",
                 "--workers", "2"]) == 0
    assert main(["maps", *common, "--out", str(tmp_path / "b1"), "--batch-size", "1"]) == 0
    assert main(["maps", *common, "--out", str(tmp_path / "sized"), "--size", "32"]) == 0
    for sample_id, (w, h) in FOLDER_SIZES.items():
        four = read_npz(tmp_path / "b4" / f"{sample_id}.npz")
        one = read_npz(tmp_path / "b1" / f"{sample_id}.npz")
        sized = read_npz(tmp_path / "sized" / f"{sample_id}.npz")
        mask = np.array(Image.open(folder_root / "masks" / f"{sample_id}.png"))
        labels = sorted(set(mask.flatten().tolist()) - {0, 255})
        for stored in (four, one, sized):
            assert stored["maps"].shape == (len(labels), h, w)
            assert stored["classes"].tolist() == labels
        # batching images of the same size together (a, d are 40x32) changes nothing
        np.testing.assert_allclose(four["maps"].astype(np.float32),
                                   one["maps"].astype(np.float32), atol=2e-3)


def test_topk_and_a_class_map_file(tiny_run: Path, folder_root: Path, tmp_path: Path) -> None:
    table = {"class1": [0, 3], "class2": [1], "class4": [2, 4]}
    (tmp_path / "map.json").write_text(json.dumps(table))
    out = tmp_path / "mapped"
    args = ["maps", "--dataset", "folder", "--root", str(folder_root), "--model", str(tiny_run),
            "--no-progress", "--class-map", str(tmp_path / "map.json"), "--topk", "2",
            "--out", str(out)]
    assert main(args) == 0
    model, _ = load_model(tiny_run)
    mapping = ((), (0, 3), (1,), (), (2, 4), ())
    for sample_id in FOLDER_SIZES:
        image = torch.from_numpy(np.array(Image.open(folder_root / "images" /
                                                     f"{sample_id}.png")))
        x = (image.permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.25
        scores = mapped_scores(model(x).detach(), mapping)[0]
        best = scores.topk(2)
        stored = read_npz(out / f"{sample_id}.npz")
        assert stored["classes"].tolist() == best.indices.tolist()
        np.testing.assert_allclose(stored["scores"], best.values.numpy(), rtol=1e-4)
    described = json.loads((out / "maps.json").read_text())
    assert described["targets"] == "top-2" and "class_map" in described["correspondence"]


def test_maps_argument_errors(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "x")
    cases = [
        (maps_args(tiny_run, tmp_path / "x", "--weights", "random"), "leave out --weights"),
        (["maps", *SYNTHETIC, "--model", "resnet18", "--weights", "random", "--out", out],
         "1000 outputs and the data set 6 classes"),
        (["maps", *SYNTHETIC, "--model", str(tmp_path), "--out", out], "not a loupe training"),
        (maps_args(tiny_run, tmp_path / "x", "--scales", "1", "-0.5"), "argument --scales"),
        (maps_args(tiny_run, tmp_path / "x", "--batch-size", "0"), "--batch-size"),
        (["maps", "--dataset", "voc", "--model", str(tiny_run), "--out", out], "--root is"),
        (["maps", "--dataset", "voc", "--root", str(tmp_path / "none"), "--model",
          str(tiny_run), "--out", out], "none: folder not found"),
        (maps_args(tiny_run, tmp_path / "x", "--class-map", str(tmp_path / "no.json")),
         "no.json: class mapping file not found"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
