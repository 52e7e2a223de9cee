"""PASCAL VOC: segmentation (VOC 2012, optionally SBD-augmented) and boxes from the XML files.

Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010; augmented
masks from Hariharan et al., "Semantic Contours from Inverse Detectors" (SBD), ICCV 2011, in
the ``SegmentationClassAug`` / ``train_aug`` form used by DeepLab, IRN and AMN.

Layout (``root`` may be ``VOCdevkit`` or ``VOCdevkit/VOC2012`` itself)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          paletted, 0..20 and 255 (object borders)
    VOC2012/SegmentationClassAug/<id>.png       optional, same values, 10,582 train_aug + val
    VOC2012/ImageSets/Segmentation/<split>.txt  train, val, trainval, train_aug (if added)
    VOC2012/Annotations/<id>.xml                boxes (``voc-boxes``)
    VOC2012/ImageSets/Main/<split>.txt          split lists for ``voc-boxes``

Class indices: 0 = background, 1..20 the VOC classes in the official order, 255 = ignore.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from loupe.data.base import (
    ImageDataset,
    PathLike,
    Sample,
    Transform,
    multi_hot,
    read_id_list,
    read_index_mask_and_labels,
)
from loupe.io import save_npz

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
"""The 21 VOC segmentation classes; index 0 is the background."""


def find_voc_root(root: PathLike, year: str | None = None) -> Path:
    """The ``VOC<year>`` folder under ``root`` (a ``VOCdevkit``), or ``root`` itself when it
    already holds VOC sub-folders. ``year=None`` prefers 2012, else the only ``VOC20xx``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: VOC root folder not found")
    if year is not None:
        candidate = root / f"VOC{year}"
        if candidate.is_dir():
            return candidate
    else:
        years = sorted(p for p in root.glob("VOC20[0-9][0-9]") if p.is_dir())
        preferred = root / "VOC2012"
        if preferred.is_dir():
            return preferred
        if len(years) == 1:
            return years[0]
        if len(years) > 1:
            raise ValueError(
                f"{root}: several VOC years ({', '.join(p.name for p in years)}); pass year="
            )
    markers = ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "Annotations",
               "ImageSets")
    if any((root / m).is_dir() for m in markers):
        return root
    raise FileNotFoundError(
        f"{root}: not a VOC folder (expected VOCdevkit/VOC{year or '2012'} or a folder with "
        "JPEGImages/, SegmentationClass/ or Annotations/)"
    )


class VOCSegmentation(ImageDataset):
    """VOC 2012 semantic segmentation; 21 classes (0 = background), 255 = ignore.

    Args:
        root: ``VOCdevkit`` or ``VOC2012``.
        split: list name, read from ``ImageSets/Segmentation/<split>.txt`` (``train``, ``val``,
            ``trainval``, ``train_aug`` when that list was added), unless ``split_file``.
        augmented: masks from ``SegmentationClassAug`` (True), ``SegmentationClass`` (False), or
            the first when present (None).
        mask_dir: an explicit mask folder (overrides ``augmented``).
        split_file: an explicit list of ids (e.g. IRN's ``voc12/train_aug.txt``).
        labels_file: image-level labels (:func:`load_image_labels`): a JSON ``{id: [class
            indices 1..20]}`` or the ``.npz`` that :func:`convert_pickled_labels` makes of
            IRN's pickled ``cls_labels.npy`` (which is refused: never unpickled here).
            Without it, labels are the classes present in the mask (0 and 255 excluded).
        images: False reads masks only (``image=None``; JPEGImages may be absent).
        transform: applied to the PIL image.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        *,
        augmented: bool | None = None,
        mask_dir: PathLike | None = None,
        split_file: PathLike | None = None,
        labels_file: PathLike | None = None,
        images: bool = True,
        transform: Transform | None = None,
    ) -> None:
        self.root = find_voc_root(root, "2012")
        self.mask_dir = _voc_mask_dir(self.root, augmented, mask_dir)
        list_path = Path(split_file) if split_file else (
            self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        )
        ids = read_id_list(list_path, f"VOC split file for split {split!r}")
        super().__init__(ids, VOC_CLASSES, source=list_path, images=images, transform=transform)
        self.image_dir = self.root / "JPEGImages"
        if images and not self.image_dir.is_dir():
            raise FileNotFoundError(
                f"{self.image_dir}: image folder not found (pass images=False to read masks only)"
            )
        self.labels_file = Path(labels_file) if labels_file else None
        self._labels = (
            load_image_labels(self.labels_file, self.ids, self.num_classes)
            if self.labels_file else None
        )

    def image_path(self, index: int) -> Path:
        return self.image_dir / f"{self.ids[index]}.jpg"

    def annotation(self, index: int, image_size: tuple[int, int] | None) -> Sample:
        sample_id = self.ids[index]
        mask, mask_labels = read_index_mask_and_labels(
            self.mask_dir / f"{sample_id}.png", self.num_classes
        )
        labels = self._labels[index].clone() if self._labels is not None else mask_labels
        return Sample(id=sample_id, image=None, labels=labels, mask=mask)


def _voc_mask_dir(root: Path, augmented: bool | None, mask_dir: PathLike | None) -> Path:
    if mask_dir is not None:
        folder = Path(mask_dir)
    elif augmented is None:
        folder = root / "SegmentationClassAug"
        if not folder.is_dir():
            folder = root / "SegmentationClass"
    else:
        folder = root / ("SegmentationClassAug" if augmented else "SegmentationClass")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: mask folder not found")
    return folder


def load_image_labels(path: Path, ids: Sequence[str], num_classes: int) -> torch.Tensor:
    """``(len(ids), num_classes)`` float32 labels of ``ids`` from a label file, background 0.

    ``.json``: ``{id: [class indices 1..num_classes-1]}``. ``.npz``: the safe form of IRN's
    ``cls_labels.npy`` (:func:`convert_pickled_labels`): ``ids`` (strings) and ``labels``
    ``(N, num_classes - 1)`` float32; ids match with or without their ``_``. A pickled
    ``.npy`` (IRN's own file) is refused: unpickling can run code from the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    if path.suffix == ".json":
        return load_json_labels(path, ids, num_classes)
    if path.suffix == ".npy" and is_pickled_npy(path):
        raise ValueError(
            f"{path}: a pickled .npy; loupe does not unpickle label files (it can run code from "
            "the file). Convert it once with --trust-pickle (trusted files only), or give the "
            "labels as .json {id: [class indices]} or .npz (loupe.data.voc.convert_pickled_labels)"
        )
    if path.suffix != ".npz":
        raise ValueError(f"{path}: labels file must be .json or .npz (or a pickled .npy with "
                         "--trust-pickle)")
    table = _read_labels_npz(path)
    rows = torch.zeros(len(ids), num_classes)
    for row, sample_id in enumerate(ids):
        value = table.get(sample_id.replace("_", ""))
        if value is None:
            raise ValueError(f"{path}: no labels for image {sample_id!r}")
        if value.shape != (num_classes - 1,):
            raise ValueError(f"{path}: labels of {sample_id!r} have shape {value.shape}, "
                             f"expected ({num_classes - 1},)")
        rows[row, 1:] = torch.from_numpy(value)
    return rows


def _read_labels_npz(path: Path) -> dict[str, np.ndarray]:
    """Id without ``_`` -> float32 label row, from the ``ids``/``labels`` arrays (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names, labels = data["ids"], data["labels"]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: not a labels .npz with arrays 'ids' and 'labels' "
                         f"({error})") from error
    if labels.ndim != 2 or len(names) != len(labels):
        raise ValueError(f"{path}: 'labels' must be (N, classes) for N 'ids', got "
                         f"{labels.shape} for {len(names)}")
    return {str(n).replace("_", ""): row for n, row in
            zip(names.tolist(), labels.astype(np.float32), strict=True)}


def is_pickled_npy(path: Path) -> bool:
    """True when ``path`` is a ``.npy`` of Python objects (a pickle), read from its header
    only (nothing is unpickled)."""
    if path.suffix != ".npy" or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            dtype = read_header(handle)[2]
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a .npy file ({error})") from error
    return bool(dtype.hasobject)


def convert_pickled_labels(source: Path, target: Path) -> Path:
    """Read IRN's pickled ``cls_labels.npy`` (a dict ``int(id without '_') -> float32[C]``;
    this unpickles: trusted files only) and write its safe form ``target`` (``.npz`` with
    ``ids`` and ``labels``, see :func:`load_image_labels`), atomically."""
    try:
        table = np.load(source, allow_pickle=True).item()
        names = [str(key) for key in table]
        labels = np.stack([np.asarray(value, dtype=np.float32) for value in table.values()])
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise ValueError(f"{source}: not a cls_labels.npy-style file (a pickled dict id -> "
                         f"float32[20]): {error}") from error
    save_npz(target, ids=np.array(names, dtype=str), labels=labels)
    return target


def load_json_labels(path: Path, ids: Sequence[str], num_classes: int) -> torch.Tensor:
    """``(len(ids), num_classes)`` from a JSON ``{id: [class indices 1..num_classes-1]}``."""
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read labels JSON ({error})") from error
    if not isinstance(table, dict):
        raise ValueError(f"{path}: labels JSON must be an object {{id: [class indices]}}")
    rows = torch.zeros(len(ids), num_classes)
    for row, sample_id in enumerate(ids):
        if sample_id not in table:
            raise ValueError(f"{path}: no labels for image {sample_id!r}")
        classes = table[sample_id]
        if not isinstance(classes, list) or not all(
            isinstance(c, int) and 1 <= c < num_classes for c in classes
        ):
            raise ValueError(
                f"{path}: labels of {sample_id!r} must be a list of class indices in "
                f"1..{num_classes - 1}, got {classes!r}"
            )
        rows[row] = multi_hot(classes, num_classes)
    return rows


class VOCBoxes(ImageDataset):
    """VOC boxes from ``Annotations/<id>.xml`` (for localization); class indices as in
    :data:`VOC_CLASSES` (1..20, no mask).

    Boxes are converted from VOC's 1-based inclusive pixel coordinates to edge coordinates:
    ``(xmin - 1, ymin - 1, xmax, ymax)``. Labels are the classes of the kept boxes.

    Args:
        root: ``VOCdevkit`` (``year`` picks ``VOC2007``/``VOC2012``) or a ``VOC20xx`` folder.
        split: ``ImageSets/Main/<split>.txt`` unless ``split_file``.
        difficult: keep objects marked ``difficult`` (default True).
        images: False skips reading images.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "val",
        *,
        year: str | None = None,
        split_file: PathLike | None = None,
        difficult: bool = True,
        images: bool = True,
        transform: Transform | None = None,
    ) -> None:
        self.root = find_voc_root(root, year)
        list_path = Path(split_file) if split_file else (
            self.root / "ImageSets" / "Main" / f"{split}.txt"
        )
        ids = read_id_list(list_path, f"VOC split file for split {split!r}")
        super().__init__(ids, VOC_CLASSES, source=list_path, images=images, transform=transform)
        self.difficult = difficult
        self.annotation_dir = self.root / "Annotations"
        if not self.annotation_dir.is_dir():
            raise FileNotFoundError(f"{self.annotation_dir}: annotation folder not found")

    def image_path(self, index: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[index]}.jpg"

    def annotation(self, index: int, image_size: tuple[int, int] | None) -> Sample:
        sample_id = self.ids[index]
        boxes, names = read_voc_xml(self.annotation_dir / f"{sample_id}.xml", self.difficult)
        path = self.annotation_dir / f"{sample_id}.xml"
        box_labels = []
        for name in names:
            if name not in VOC_CLASSES[1:]:
                raise ValueError(f"{path}: unknown class {name!r} (not a VOC class)")
            box_labels.append(VOC_CLASSES.index(name))
        box_labels_t = torch.tensor(box_labels, dtype=torch.long)
        return Sample(
            id=sample_id, image=None, labels=multi_hot(box_labels_t, self.num_classes),
            boxes=boxes, box_labels=box_labels_t,
        )


def read_voc_xml(path: Path, difficult: bool = True) -> tuple[torch.Tensor, list[str]]:
    """``(M, 4)`` float32 edge-coordinate boxes and the class names of a VOC XML file.

    The XML is parsed with the standard library (trusted files only)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        tree = ElementTree.parse(path)
    except ElementTree.ParseError as error:
        raise ValueError(f"{path}: malformed XML ({error})") from error
    boxes: list[list[float]] = []
    names: list[str] = []
    for number, obj in enumerate(tree.getroot().iter("object"), start=1):
        if not difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        texts = [None if box is None else box.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        try:
            xmin, ymin, xmax, ymax = (float(text or "") for text in texts)
        except ValueError as error:
            raise ValueError(
                f"{path}: object {number} has no valid <bndbox> xmin/ymin/xmax/ymax"
            ) from error
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"{path}: object {number} has an inverted box")
        boxes.append([xmin - 1.0, ymin - 1.0, xmax, ymax])
        names.append(name)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), names
