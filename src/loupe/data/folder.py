"""A generic segmentation folder: images, index-PNG masks with the same stems, optional labels.

Layout::

    root/images/<id>.jpg|png|...        (or images/<split>/ with masks/<split>/)
    root/masks/<id>.png                 paletted or grayscale class indices, 255 = ignore
    root/class_names.txt                optional: one name per line, line 0 = background
    root/labels.json                    optional: {id: [class indices 1..N-1]}
    root/<split>.txt                    optional: the ids of a split, one per line

Class names come from ``class_names`` (a list), ``class_names_file`` (default
``root/class_names.txt``) or ``num_classes`` (names ``background, class_1, ...``). Image-level
labels come from the labels file when there is one, else from the masks (0 and 255 excluded).
Without a ``masks/`` folder the labels file is required and ``mask`` is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from loupe.data.base import (
    ImageDataset,
    PathLike,
    Sample,
    Transform,
    find_images,
    read_class_names,
    read_id_list,
    read_index_mask_and_labels,
)
from loupe.data.voc import load_json_labels


class FolderSegmentation(ImageDataset):
    """Images and index masks in a folder (layout in the module docstring).

    Args:
        root: the folder.
        split: None for every image in ``images/``; a name reads ``root/<split>.txt`` when it
            exists, else the sub-folders ``images/<split>/`` and ``masks/<split>/``.
        class_names / class_names_file / num_classes: the class set (index 0 = background).
        labels_file: JSON ``{id: [class indices]}`` (default ``root/labels.json`` if present).
        images: False reads masks only.
        transform: applied to the PIL image.
    """

    def __init__(
        self,
        root: PathLike,
        split: str | None = None,
        *,
        class_names: Sequence[str] | None = None,
        class_names_file: PathLike | None = None,
        num_classes: int | None = None,
        labels_file: PathLike | None = None,
        images: bool = True,
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        image_dir, mask_dir, ids = _folder_split(self.root, split)
        self.image_dir, self.mask_dir = image_dir, mask_dir
        found = find_images(image_dir)
        if ids is None:
            ids = list(found)
        else:
            missing = [i for i in ids if i not in found]
            if missing and images:
                raise FileNotFoundError(
                    f"{image_dir}: no image for ids of split {split!r}: {missing[:5]}"
                )
        self._image_paths = found
        names = _class_names(self.root, class_names, class_names_file, num_classes)
        super().__init__(ids, names, source=image_dir, images=images, transform=transform)
        if labels_file is None and (self.root / "labels.json").is_file():
            labels_file = self.root / "labels.json"
        self.labels_file = Path(labels_file) if labels_file else None
        self._labels = (
            load_json_labels(self.labels_file, self.ids, self.num_classes)
            if self.labels_file else None
        )
        if not self.mask_dir.is_dir():
            if self._labels is None:
                raise FileNotFoundError(
                    f"{self.mask_dir}: mask folder not found and no labels file "
                    f"({self.root / 'labels.json'}) to take image-level labels from"
                )
            self.mask_dir = None

    def image_path(self, index: int) -> Path:
        sample_id = self.ids[index]
        return self._image_paths.get(sample_id, self.image_dir / f"{sample_id}.jpg")

    def annotation(self, index: int, image_size: tuple[int, int] | None) -> Sample:
        sample_id = self.ids[index]
        mask = mask_labels = None
        if self.mask_dir is not None:
            mask, mask_labels = read_index_mask_and_labels(
                self.mask_dir / f"{sample_id}.png", self.num_classes
            )
        # The constructor requires masks or a labels file, so one of the two is set.
        labels = self._labels[index].clone() if self._labels is not None else mask_labels
        return Sample(id=sample_id, image=None, labels=labels, mask=mask)


def _folder_split(root: Path, split: str | None) -> tuple[Path, Path, list[str] | None]:
    """(image folder, mask folder, ids or None for all) of a split."""
    image_dir, mask_dir = root / "images", root / "masks"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found")
    if split is None:
        return image_dir, mask_dir, None
    list_path = root / f"{split}.txt"
    if list_path.is_file():
        return image_dir, mask_dir, read_id_list(list_path, f"split file for {split!r}")
    if (image_dir / split).is_dir():
        return image_dir / split, mask_dir / split, None
    raise FileNotFoundError(
        f"{list_path}: split file for {split!r} not found (nor a folder {image_dir / split})"
    )


def _class_names(
    root: Path,
    class_names: Sequence[str] | None,
    class_names_file: PathLike | None,
    num_classes: int | None,
) -> list[str]:
    if class_names is not None:
        return list(class_names)
    if class_names_file is not None:
        return read_class_names(class_names_file)
    if (root / "class_names.txt").is_file():
        return read_class_names(root / "class_names.txt")
    if num_classes is not None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + classes), got {num_classes}")
        return ["background"] + [f"class_{i}" for i in range(1, num_classes)]
    raise ValueError(
        f"{root}: no class set: add class_names.txt (line 0 = background) or pass class_names= "
        "or num_classes="
    )
