"""ImageNet (ILSVRC CLS-LOC) boxes from the per-image XML files, for CAM's localization protocol.

The ILSVRC localization annotations are one PASCAL VOC XML file per image whose object names
are WordNet ids (``n01440764``). The layout of the ILSVRC CLS-LOC release (and of its Kaggle
copy)::

    root/Annotations/CLS-LOC/<split>/<id>.xml      (train: <wnid>/<id>.xml)
    root/Data/CLS-LOC/<split>/<id>.JPEG
    root/LOC_synset_mapping.txt                    optional: "<wnid> <words>" a line

``Annotations/<split>`` and ``Data/<split>`` (without ``CLS-LOC``) are found too, and every
folder can be named instead (``annotations=``, ``image_dir=``, ``synsets=``). Class ``k`` is
the ``k``-th line of the synset file (ImageNet-1k's order: the standard torchvision order);
without one, the sorted WordNet ids found in the XML files (the same order when all 1000
occur, a warning otherwise). No background class: ``labels`` are the classes of the image's
boxes, as in :mod:`loupe.data.wsol`.

Boxes are read as VOC's (1-based inclusive pixel coordinates, :func:`loupe.data.voc.read_voc_xml`)
and clipped to the ``<size>`` the file gives, so that a 0-based ``xmin = 0`` stays inside.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

from loupe.data.base import ImageDataset, PathLike, Sample, Transform, multi_hot
from loupe.data.voc import read_voc_xml

logger = logging.getLogger(__name__)

SYNSET_FILE = "LOC_synset_mapping.txt"
IMAGE_SUFFIXES = (".JPEG", ".jpeg", ".jpg", ".png")


class ILSVRCBoxes(ImageDataset):
    """ILSVRC boxes and images (layout and rules in the module docstring).

    Args:
        root: the folder holding ``Annotations/`` and ``Data/``.
        split: ``val`` (default), ``train`` or ``test``.
        annotations, image_dir: the XML folder and the image folder, when not in the layout.
        synsets: the class list (``LOC_synset_mapping.txt`` or one WordNet id a line).
        images: False skips reading images (boxes and labels only).
        transform: applied to the PIL image.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "val",
        *,
        annotations: PathLike | None = None,
        image_dir: PathLike | None = None,
        synsets: PathLike | None = None,
        images: bool = True,
        transform: Transform | None = None,
    ) -> None:
        root = Path(root)
        self.annotation_dir = Path(annotations) if annotations else _layout_dir(
            root, "Annotations", split)
        self.image_dir = Path(image_dir) if image_dir else _layout_dir(root, "Data", split,
                                                                      required=images)
        files = sorted(self.annotation_dir.rglob("*.xml"))
        if not files:
            raise ValueError(f"{self.annotation_dir}: no ILSVRC XML files")
        ids = [f.relative_to(self.annotation_dir).with_suffix("").as_posix() for f in files]
        synset_file = Path(synsets) if synsets else root / SYNSET_FILE
        if synsets and not synset_file.is_file():
            raise FileNotFoundError(f"synsets file {synset_file} not found")
        wnids = (read_synsets(synset_file) if synset_file.is_file()
                 else _wnids_in(files, self.annotation_dir))
        super().__init__(ids, wnids, source=self.annotation_dir, images=images,
                         transform=transform)
        self._index = {wnid: k for k, wnid in enumerate(wnids)}

    def image_path(self, index: int) -> Path:
        stem = self.image_dir / self.ids[index]
        for suffix in IMAGE_SUFFIXES:
            if stem.with_suffix(suffix).is_file():
                return stem.with_suffix(suffix)
        raise FileNotFoundError(f"{stem}.JPEG: image of {self.ids[index]!r} not found")

    def annotation(self, index: int, image_size: tuple[int, int] | None) -> Sample:
        path = self.annotation_dir / f"{self.ids[index]}.xml"
        boxes, names = read_ilsvrc_xml(path)
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise ValueError(f"{path}: unknown synset {unknown[0]!r} (not in the class list)")
        box_labels = torch.tensor([self._index[n] for n in names], dtype=torch.long)
        return Sample(id=self.ids[index], image=None,
                      labels=multi_hot(box_labels, self.num_classes), boxes=boxes,
                      box_labels=box_labels)


def read_ilsvrc_xml(path: Path) -> tuple[torch.Tensor, list[str]]:
    """``(M, 4)`` float32 edge-coordinate boxes, clipped to the file's ``<size>``, and the
    WordNet ids of an ILSVRC XML file (a ValueError naming the file when malformed)."""
    boxes, names = read_voc_xml(path)
    size = ElementTree.parse(path).getroot().find("size")
    try:
        width = float(size.findtext("width") or "") if size is not None else None
        height = float(size.findtext("height") or "") if size is not None else None
    except ValueError as error:
        raise ValueError(f"{path}: <size> has no valid width/height") from error
    boxes = boxes.clamp(min=0)
    if width is not None and height is not None:
        boxes = torch.minimum(boxes, torch.tensor([width, height, width, height]))
    return boxes, names


def read_synsets(path: Path) -> list[str]:
    """The WordNet ids of a synset file, the first word of each non-empty line
    (``LOC_synset_mapping.txt``: ``n01440764 tench, Tinca tinca``); errors name the file."""
    wnids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if not wnids:
        raise ValueError(f"{path}: no synsets")
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path}: a synset is listed twice")
    return wnids


def _layout_dir(root: Path, kind: str, split: str, required: bool = True) -> Path:
    """``root/<kind>/CLS-LOC/<split>`` or ``root/<kind>/<split>``."""
    for folder in (root / kind / "CLS-LOC" / split, root / kind / split):
        if folder.is_dir():
            return folder
    if required:
        raise FileNotFoundError(f"{root / kind / 'CLS-LOC' / split}: ILSVRC {kind.lower()} "
                                f"folder for split {split!r} not found")
    return root / kind / "CLS-LOC" / split


def _wnids_in(files: list[Path], folder: Path) -> list[str]:
    """The sorted WordNet ids named in the XML files (a warning unless there are 1000)."""
    found = sorted({name for f in files for name in read_voc_xml(f)[1]})
    if not found:
        raise ValueError(f"{folder}: no objects in the XML files")
    if len(found) != 1000:
        logger.warning("%s: no %s; classes are the %d synsets found, sorted (ImageNet-1k's "
                       "order only when all 1000 occur)", folder, SYNSET_FILE, len(found))
    return found
