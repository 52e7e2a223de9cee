"""ILSVRC CLS-LOC boxes from hand-written per-image XML files in the release's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loupe.data import ILSVRCBoxes, open_dataset
from loupe.data.spec import DatasetSpec, open_spec

from .layouts import write_image

# An ILSVRC2012 validation annotation as the release writes it (two objects of one class;
# xmin 0 in the second, which the release does contain).
VAL_1 = """<annotation>
	<folder>val</folder>
	<filename>ILSVRC2012_val_00000001</filename>
	<source><database>ILSVRC_2012</database></source>
	<size><width>20</width><height>16</height><depth>3</depth></size>
	<segmented>0</segmented>
	<object>
		<name>n01751748</name>
		<pose>Unspecified</pose>
		<truncated>0</truncated>
		<difficult>0</difficult>
		<bndbox><xmin>3</xmin><ymin>2</ymin><xmax>12</xmax><ymax>9</ymax></bndbox>
	</object>
	<object>
		<name>n01751748</name>
		<pose>Unspecified</pose>
		<truncated>1</truncated>
		<difficult>0</difficult>
		<bndbox><xmin>0</xmin><ymin>5</ymin><xmax>20</xmax><ymax>16</ymax></bndbox>
	</object>
</annotation>
"""
VAL_2 = """<annotation>
	<filename>ILSVRC2012_val_00000002</filename>
	<size><width>16</width><height>16</height><depth>3</depth></size>
	<object><name>n01440764</name>
		<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>16</xmax><ymax>8</ymax></bndbox></object>
</annotation>
"""
SYNSETS = "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n" \
          "n01751748 sea snake\n"


def write_ilsvrc(root: Path, synsets: bool = True) -> Path:
    annotations = root / "Annotations" / "CLS-LOC" / "val"
    annotations.mkdir(parents=True)
    (annotations / "ILSVRC2012_val_00000001.xml").write_text(VAL_1)
    (annotations / "ILSVRC2012_val_00000002.xml").write_text(VAL_2)
    write_image(root / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000001.JPEG", (20, 16))
    write_image(root / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000002.JPEG")
    if synsets:
        (root / "LOC_synset_mapping.txt").write_text(SYNSETS)
    return root


def test_reads_boxes_classes_and_images_in_the_release_layout(tmp_path):
    data = open_dataset("ilsvrc", write_ilsvrc(tmp_path))
    assert isinstance(data, ILSVRCBoxes)
    assert data.ids == ("ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002")
    assert data.class_names == ("n01440764", "n01443537", "n01751748")  # the synset file's order
    sample = data[0]
    assert sample.image.size == (20, 16)
    # VOC's 1-based inclusive boxes to edge coordinates; xmin 0 is clipped to the image
    assert sample.boxes.tolist() == [[2.0, 1.0, 12.0, 9.0], [0.0, 4.0, 20.0, 16.0]]
    assert sample.box_labels.tolist() == [2, 2]
    assert sample.labels.tolist() == [0.0, 0.0, 1.0]  # no background class
    assert data[1].box_labels.tolist() == [0] and data[1].boxes.tolist() == [[0, 0, 16, 8]]
    assert data.mask(0) is None


def test_without_a_synset_file_the_classes_are_the_sorted_ids_found(tmp_path, caplog):
    data = open_dataset("ilsvrc", write_ilsvrc(tmp_path, synsets=False), images=False)
    assert data.class_names == ("n01440764", "n01751748")
    assert "classes are the 2 synsets found" in caplog.text
    assert data[0].image is None and data[0].box_labels.tolist() == [1, 1]


def test_spec_names_the_synset_file_and_flat_layouts_are_found(tmp_path):
    root = tmp_path / "flat"
    (root / "Annotations" / "val").mkdir(parents=True)
    (root / "Annotations" / "val" / "a.xml").write_text(VAL_2)
    write_image(root / "Data" / "val" / "a.JPEG")
    names = tmp_path / "synsets.txt"
    names.write_text(SYNSETS)
    data = open_spec(DatasetSpec("ilsvrc", str(root), class_names=str(names)))
    assert data.ids == ("a",) and data.num_classes == 3 and data[0].image.size == (16, 16)


def test_errors_name_the_file(tmp_path):
    root = write_ilsvrc(tmp_path / "ok")
    with pytest.raises(FileNotFoundError, match="ILSVRC annotations folder for split 'train'"):
        open_dataset("ilsvrc", root, "train")
    with pytest.raises(FileNotFoundError, match="synsets file .*nothing.txt not found"):
        open_dataset("ilsvrc", root, synsets=root / "nothing.txt")
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench\n")
    with pytest.raises(ValueError, match=r"ILSVRC2012_val_00000001\.xml: unknown synset "
                       "'n01751748'"):
        open_dataset("ilsvrc", root)[0]
    broken = root / "Annotations" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000002.xml"
    broken.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="ILSVRC2012_val_00000002.xml: malformed XML"):
        open_dataset("ilsvrc", root, images=False)[1]
    (root / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000001.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match="image of 'ILSVRC2012_val_00000001' not found"):
        open_dataset("ilsvrc", root)[0]


def test_boxes_match_the_image_grid(tmp_path):
    """Edge coordinates: a VOC box 1..16 x 1..8 covers pixel columns 0..15 and rows 0..7."""
    from loupe.metrics import inclusive_boxes

    data = open_dataset("ilsvrc", write_ilsvrc(tmp_path), images=False)
    assert inclusive_boxes(data[1].boxes).tolist() == [[0, 0, 15, 7]]
    assert torch.equal(inclusive_boxes(data[0].boxes[:1]), torch.tensor([[2, 1, 11, 8]]))
