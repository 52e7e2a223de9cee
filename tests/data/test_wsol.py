"""wsolevaluation metadata (boxes) on a hand-written tiny metadata folder."""

from __future__ import annotations

import pytest
import torch

from loupe.data import WSOLMetadata, open_dataset

from .layouts import write_image

IDS = ["001.Gull/a.jpg", "001.Gull/b.jpg", "002.Crow/c.jpg"]


@pytest.fixture
def wsol_root(tmp_path):
    meta = tmp_path / "metadata" / "test"
    meta.mkdir(parents=True)
    (meta / "image_ids.txt").write_text("\n".join(IDS) + "\n")
    (meta / "class_labels.txt").write_text(f"{IDS[0]},0\n{IDS[1]},0\n{IDS[2]},1\n")
    (meta / "image_sizes.txt").write_text(f"{IDS[0]},16,12\n{IDS[1]},16,16\n{IDS[2]},8,16\n")
    (meta / "localization.txt").write_text(
        f"{IDS[0]},1,2,10,11\n{IDS[1]},0,0,16,16\n{IDS[2]},1,1,4,4\n{IDS[2]},2,8,7,15\n"
    )
    images = tmp_path / "images"
    write_image(images / IDS[0], size=(16, 12))
    write_image(images / IDS[1], size=(16, 16))
    write_image(images / IDS[2], size=(8, 16))
    return tmp_path


def test_wsol_reads_boxes_labels_and_names(wsol_root) -> None:
    data = open_dataset("wsol", wsol_root / "metadata", "test", image_root=wsol_root / "images")
    assert isinstance(data, WSOLMetadata)
    assert data.ids == tuple(IDS) and data.class_names == ("001.Gull", "002.Crow")
    sample = data[2]
    assert sample.image.size == (8, 16) and sample.mask is None
    assert sample.labels.tolist() == [0, 1]
    assert sample.boxes.tolist() == [[1, 1, 4, 4], [2, 8, 7, 15]]
    assert sample.box_labels.tolist() == [1, 1]
    assert data.image_size_of(0) == (16, 12)
    assert data[0].boxes.tolist() == [[1, 2, 10, 11]]


def test_wsol_names_and_num_classes_options(wsol_root) -> None:
    meta = wsol_root / "metadata" / "test"
    data = open_dataset("wsol", meta, images=False, num_classes=5)
    assert data.num_classes == 5 and data.class_names[4] == "class_4"
    assert data[0].image is None and data[0].labels.shape == (5,)
    named = open_dataset("wsol", meta, images=False, class_names=["gull", "crow"])
    assert named.class_names == ("gull", "crow")
    with pytest.raises(ValueError, match="class index 1 but only 1 classes"):
        open_dataset("wsol", meta, images=False, class_names=["gull"])


def test_wsol_image_size_mismatch(wsol_root) -> None:
    write_image(wsol_root / "images" / IDS[1], size=(10, 16))
    data = open_dataset("wsol", wsol_root / "metadata", "test", image_root=wsol_root / "images")
    with pytest.raises(ValueError, match=r"b\.jpg: image is 10x16 but .*image_sizes\.txt says "
                                         r"16x16"):
        data[1]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("class_labels.txt", f"{IDS[0]},0\n{IDS[1]}\n", r"class_labels\.txt:2: expected 2 "),
        ("class_labels.txt", f"{IDS[0]},0\n{IDS[1]},x\n{IDS[2]},1\n", r":2: not a number"),
        ("class_labels.txt", f"{IDS[0]},0\n{IDS[1]},0\n", r"no entry for image '002"),
        ("image_sizes.txt", f"{IDS[0]},1,1\nzzz.jpg,1,1\n", r"sizes\.txt:2: image 'zzz\.jpg' is"),
        ("image_sizes.txt", f"{IDS[0]},1,1\n{IDS[0]},1,1\n", r"second entry for image"),
        ("localization.txt", f"{IDS[0]},5,5,1,1\n", r"inverted box"),
        ("image_ids.txt", "\n", r"image_ids\.txt: empty WSOL image list"),
    ],
)
def test_wsol_malformed_metadata(wsol_root, name, text, message) -> None:
    meta = wsol_root / "metadata" / "test"
    (meta / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        open_dataset("wsol", meta, images=False)


def test_wsol_missing_files(wsol_root) -> None:
    with pytest.raises(FileNotFoundError, match="split 'val' not found"):
        open_dataset("wsol", wsol_root / "metadata", "val")
    (wsol_root / "metadata" / "test" / "localization.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"localization\.txt: WSOL metadata file"):
        open_dataset("wsol", wsol_root / "metadata", "test")


def test_wsol_unreadable_image(wsol_root) -> None:
    (wsol_root / "images" / IDS[0]).write_bytes(b"xx")
    data = WSOLMetadata(wsol_root / "metadata", "test", image_root=wsol_root / "images")
    with pytest.raises(ValueError, match=r"a\.jpg: cannot read image"):
        data[0]
    assert torch.equal(data.annotation(0, None).boxes, torch.tensor([[1.0, 2, 10, 11]]))
