"""Box-annotated localization sets in the wsolevaluation metadata format.

Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020
(https://github.com/clovaai/wsolevaluation). A metadata folder holds four comma-separated
files keyed by the image path relative to the image root::

    image_ids.txt        <path>
    class_labels.txt     <path>,<class index, 0-based>
    image_sizes.txt      <path>,<width>,<height>
    localization.txt     <path>,<x0>,<y0>,<x1>,<y1>     one line per box (several allowed)

Classes have no background index here: ``labels`` is ``(num_classes,)`` one-hot and every box
of an image carries the image's class. ``class_names`` come from the option, else from the
images' parent folders when each class has exactly one (CUB: ``001.Black_footed_Albatross``),
else ``class_0, class_1, ...``. Mask-based metadata (OpenImages) is not supported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from loupe.data.base import ImageDataset, PathLike, Sample, Transform, multi_hot, read_id_list

METADATA_FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


class WSOLMetadata(ImageDataset):
    """Images, one class each, and their boxes from wsolevaluation metadata.

    Args:
        root: the metadata folder (e.g. ``metadata/CUB``), or the folder holding it.
        split: a sub-folder of ``root`` (``train``, ``val``, ``test``); None when the four files
            are in ``root`` itself.
        image_root: where the paths in the metadata start (default ``root``).
        class_names: the names in class-index order.
        num_classes: at least the largest class index + 1 (default exactly that).
        images: False skips reading images (boxes and labels only).
        transform: applied to the PIL image.

    The image sizes in ``image_sizes.txt`` are checked against each image read.
    """

    def __init__(
        self,
        root: PathLike,
        split: str | None = None,
        *,
        image_root: PathLike | None = None,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        images: bool = True,
        transform: Transform | None = None,
    ) -> None:
        root = Path(root)
        folder = root / split if split else root
        if split and not folder.is_dir():
            raise FileNotFoundError(f"{folder}: WSOL metadata folder for split {split!r} not found")
        self.metadata_dir = folder
        ids = read_id_list(folder / "image_ids.txt", "WSOL image list")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{folder / 'image_ids.txt'}: duplicate image ids")
        known = set(ids)
        class_rows = _read_table(folder / "class_labels.txt", 1, known)
        size_rows = _read_table(folder / "image_sizes.txt", 2, known)
        box_rows = _read_table(folder / "localization.txt", 4, known, many=True)
        for name, table in (("class_labels.txt", class_rows), ("image_sizes.txt", size_rows)):
            missing = [i for i in ids if i not in table]
            if missing:
                raise ValueError(f"{folder / name}: no entry for image {missing[0]!r}")
        self._classes = {i: int(class_rows[i][0][0]) for i in ids}
        self._sizes = {i: (int(size_rows[i][0][0]), int(size_rows[i][0][1])) for i in ids}
        self._boxes = {
            i: torch.tensor(box_rows.get(i, []), dtype=torch.float32).reshape(-1, 4) for i in ids
        }
        for sample_id, boxes in self._boxes.items():
            if bool((boxes[:, 2:] < boxes[:, :2]).any()):
                raise ValueError(
                    f"{folder / 'localization.txt'}: inverted box (x1 < x0 or y1 < y0) for "
                    f"{sample_id!r}"
                )
        largest = max(self._classes.values())
        if min(self._classes.values()) < 0:
            raise ValueError(f"{folder / 'class_labels.txt'}: negative class index")
        if class_names is None:
            count = num_classes if num_classes is not None else largest + 1
            class_names = _names_from_folders(ids, self._classes, count)
        if len(class_names) <= largest:
            raise ValueError(
                f"{folder / 'class_labels.txt'}: class index {largest} but only "
                f"{len(class_names)} classes"
            )
        super().__init__(
            ids, class_names, source=folder / "image_ids.txt", images=images, transform=transform
        )
        self.image_root = Path(image_root) if image_root else root

    def image_path(self, index: int) -> Path:
        return self.image_root / self.ids[index]

    def image_size_of(self, index: int) -> tuple[int, int]:
        """``(width, height)`` from ``image_sizes.txt``."""
        return self._sizes[self.ids[index]]

    def annotation(self, index: int, image_size: tuple[int, int] | None) -> Sample:
        sample_id = self.ids[index]
        if image_size is not None and image_size != self._sizes[sample_id]:
            width, height = self._sizes[sample_id]
            raise ValueError(
                f"{self.image_path(index)}: image is {image_size[0]}x{image_size[1]} but "
                f"{self.metadata_dir / 'image_sizes.txt'} says {width}x{height}"
            )
        boxes = self._boxes[sample_id].clone()
        class_index = self._classes[sample_id]
        return Sample(
            id=sample_id, image=None, labels=multi_hot([class_index], self.num_classes),
            boxes=boxes, box_labels=torch.full((boxes.shape[0],), class_index, dtype=torch.long),
        )


def _read_table(
    path: Path, width: int, known: set[str], many: bool = False
) -> dict[str, list[list[float]]]:
    """``path -> rows of `width` numbers`` from a metadata file; errors name file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: WSOL metadata file not found")
    table: dict[str, list[list[float]]] = defaultdict(list)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != width + 1:
            raise ValueError(
                f"{path}:{number}: expected {width + 1} comma-separated fields, got {len(fields)}"
            )
        key = fields[0]
        if key not in known:
            raise ValueError(f"{path}:{number}: image {key!r} is not in image_ids.txt")
        try:
            values = [float(f) for f in fields[1:]]
        except ValueError as error:
            raise ValueError(f"{path}:{number}: not a number ({error})") from error
        if table[key] and not many:
            raise ValueError(f"{path}:{number}: second entry for image {key!r}")
        table[key].append(values)
    return dict(table)


def _names_from_folders(ids: Sequence[str], classes: dict[str, int], count: int) -> list[str]:
    """Parent-folder names when each class maps to exactly one folder and vice versa."""
    folders: dict[int, set[str]] = defaultdict(set)
    for sample_id in ids:
        folders[classes[sample_id]].add(Path(sample_id).parent.name)
    names = {k: next(iter(v)) for k, v in folders.items() if len(v) == 1 and next(iter(v))}
    if len(names) == count and len(set(names.values())) == count:
        return [names[k] for k in range(count)]
    return [f"class_{k}" for k in range(count)]
