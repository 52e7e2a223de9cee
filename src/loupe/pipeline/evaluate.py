"""Evaluating map folders (or mask folders) against a data set's ground truth
(``loupe evaluate``), in one pass, optionally sharded over ``torchrun`` ranks.

For every image and every folder: the image's confusion matrices at all background thresholds
from one ``torch.bincount`` (:func:`loupe.metrics.sweep_confusions`), or, for a folder of
masks, its one confusion matrix. Sums over images give each method's curve; the per-image
matrices are kept (sparse) for the paired bootstrap over images. Under ``torchrun`` each rank
takes ``images[rank::world]``; the sums are all-reduced and the per-image matrices gathered,
so rank 0 computes exactly what one process would.

Ignored classes (``--ignore-classes``, and with ``--class-map`` every class without a
counterpart in the class map) leave the segmentation scores as if the evaluated label space
never had them: their ground-truth pixels become 255 (not counted, as VOC's 255), their maps do
not take part in the background-threshold rule (as the all-zero map ``loupe maps`` writes for a
class without a counterpart) and their labels in mask files count as background. Their rows and
columns of every confusion matrix are then zero, so their IoU is NaN and
:func:`loupe.metrics.mean_iou` (a mean over the classes with a non-zero union) leaves them out,
at every threshold and in every bootstrap resample. Box metrics see the unchanged data.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from loupe.data.mapping import load_class_map
from loupe.masks.palette import load_mask_png
from loupe.metrics import confusion_matrix, default_thresholds, sweep_confusions
from loupe.metrics.wsol import default_cam_thresholds
from loupe.pipeline import distributed
from loupe.pipeline.datasets import DatasetSpec, open_pipeline_dataset, selected_count
from loupe.pipeline.files import load_map_file, output_path, read_json_file
from loupe.pipeline.localization import (
    PairRecord,
    inclusive_boxes,
    pair_record,
    pxap_counts,
    pxap_edges,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One method to evaluate: a folder of map files (``kind="maps"``) or of paletted mask
    PNGs (``kind="masks"``), and the name it has in the reports. ``method`` is the map method
    recorded in the folder's ``maps.json`` (None when unknown)."""

    name: str
    folder: Path
    kind: str
    method: str | None = None

    @property
    def suffix(self) -> str:
        return ".npz" if self.kind == "maps" else ".png"

    @property
    def is_baseline(self) -> bool:
        return bool(self.method) and str(self.method).startswith("baseline-")


def make_sources(
    maps: Sequence[Path], masks: Sequence[Path], names: Sequence[str] | None = None
) -> tuple[Source, ...]:
    """Sources from ``--maps`` and ``--masks`` folders (in that order), named by ``names``
    or by the folders' names. Errors name the folder: missing, or without any map/mask file."""
    folders = [(Path(p), "maps") for p in maps] + [(Path(p), "masks") for p in masks]
    if not folders:
        raise ValueError("give at least one --maps or --masks folder")
    if names is not None and len(names) != len(folders):
        raise ValueError(f"--names gives {len(names)} names for {len(folders)} folders")
    sources = []
    for i, (folder, kind) in enumerate(folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"--{kind} {folder}: folder not found")
        suffix = ".npz" if kind == "maps" else ".png"
        if next(folder.rglob(f"*{suffix}"), None) is None:
            raise ValueError(f"--{kind} {folder}: empty {kind} folder (no *{suffix} files)")
        method = None
        if kind == "maps" and (folder / "maps.json").is_file():
            method = read_json_file(folder / "maps.json", "maps.json").get("method")
        name = names[i] if names is not None else folder.name
        sources.append(Source(name, folder, kind, method))
    taken = [s.name for s in sources]
    if len(set(taken)) != len(taken):
        raise ValueError(f"two folders have the same name ({', '.join(taken)}); give --names")
    return tuple(sources)


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and how (see ``loupe evaluate --help``)."""

    dataset: DatasetSpec
    sources: tuple[Source, ...]
    thresholds: tuple[float, ...] = tuple(round(t, 6) for t in default_thresholds().tolist())
    boxes: bool = False
    box_threshold: float = 0.2
    workers: int = 0
    progress: bool = True
    ignore_classes: tuple[str, ...] = ()
    class_map: str | None = None


def ignored_class_indices(
    class_names: Sequence[str], ignore_classes: Sequence[str] = (), class_map: str | None = None
) -> tuple[int, ...]:
    """The sorted indices of the data-set classes left out of the segmentation scores: those
    named in ``ignore_classes`` and, with ``class_map`` (what ``loupe maps --class-map`` takes:
    ``"coco_to_imagenet"`` or a JSON file ``{data-set class name: [classifier indices]}``,
    read by :func:`loupe.data.mapping.load_class_map`), every
    class but class 0 whose set of classifier classes is empty.

    Class 0 is the background of the pseudo-masks (the threshold rule's label) and cannot be
    ignored. Errors name the argument: an unknown name (with close matches), the background,
    a class map that does not fit the data set, or nothing left to evaluate."""
    names = list(class_names)
    ignored: set[int] = set()
    for name in ignore_classes:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = (f"close matches: {', '.join(repr(c) for c in close)}" if close
                    else f"the classes are {', '.join(repr(c) for c in names[:8])}"
                    + (", ..." if len(names) > 8 else ""))
            raise ValueError(f"--ignore-classes {name!r} is not a class of the data set; {hint}")
        index = names.index(name)
        if index == 0:
            raise ValueError(f"--ignore-classes {name!r}: class 0 is the background of the "
                             "masks and cannot be ignored")
        ignored.add(index)
    if class_map is not None:
        try:
            mapping = load_class_map(class_map, names)
        except (FileNotFoundError, ValueError) as error:  # file errors name the file already
            where = "" if str(error).startswith(class_map) else f"{class_map}: "
            raise type(error)(f"--class-map {where}{error}") from error
        ignored.update(c for c in range(1, len(names)) if not mapping[c])
    if ignored and len(ignored) == len(names) - 1:
        raise ValueError("--ignore-classes/--class-map leave no class but the background; "
                         "nothing to evaluate")
    return tuple(sorted(ignored))


def relabel(labels: torch.Tensor, ignored: torch.Tensor, value: int) -> torch.Tensor:
    """``labels`` (any shape) with every entry in ``ignored`` ``(M,)`` replaced by ``value``.

    How ignored classes leave the scores: ground truth -> 255 (not counted), map labels -> -1
    (padding: the map never wins a pixel, like a class's all-zero map), predicted mask
    labels -> 0 (background: the class is not in the evaluated label space)."""
    return torch.where(torch.isin(labels, ignored.to(labels)), value, labels)


@dataclass
class Tally:
    """What a pass over the images gathered (on rank 0 after :func:`merge_tallies`).

    confusions: per source, ``(T, N, N)`` int64 (``(1, N, N)`` for masks) summed over images.
    per_image: per source, per image index, the non-zero entries of its matrices as
        ``(flat index, count)`` int64 tensors (sparse, small).
    pairs: per source, the localization records of (image, class) pairs (``boxes`` mode).
    pxap: per source, the summed PxAP histogram ``(2, E + 1)`` or None without masks.
    ignored: the indices of the classes left out of the segmentation scores (see
        :func:`ignored_class_indices`); their rows and columns of ``confusions`` are zero.
    """

    num_classes: int
    class_names: tuple[str, ...]
    ids: tuple[str, ...]
    has_masks: bool
    confusions: list[torch.Tensor]
    per_image: list[dict[int, tuple[torch.Tensor, torch.Tensor]]]
    pairs: list[dict[int, list[PairRecord]]] = field(default_factory=list)
    pxap: list[torch.Tensor | None] = field(default_factory=list)
    ignored: tuple[int, ...] = ()


class _Items(Dataset):
    """Item ``i``: the ground truth of image ``i`` and every source's file for it. Errors
    are returned, not raised, so a worker's message reaches the user unchanged."""

    def __init__(self, dataset: Any, sources: Sequence[Source], boxes: bool) -> None:
        self.dataset = dataset
        self.sources = sources
        self.boxes = boxes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        try:
            sample = self.dataset[index]
            loaded = []
            for source in self.sources:
                path = output_path(source.folder, sample.id, source.suffix)
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{path}: no {source.kind[:-1]} file for image {sample.id!r} of the data "
                        f"set (in --{source.kind} {source.folder})"
                    )
                if source.kind == "maps":
                    maps, classes = load_map_file(path)
                    predicted = _predicted(path) if self.boxes else None
                    loaded.append((torch.from_numpy(maps), torch.from_numpy(classes), path,
                                   predicted))
                else:
                    loaded.append((load_mask_png(path), None, path, None))
            boxes = sample.boxes if self.boxes else None
            return index, sample.id, sample.mask, boxes, sample.box_labels, loaded, None
        except (ValueError, FileNotFoundError) as error:
            return index, None, None, None, None, None, (type(error), str(error))


def _first(items: list) -> tuple:
    return items[0]


def evaluate_sources(config: EvaluationConfig, device: torch.device) -> Tally | None:
    """One pass over this rank's images; returns the merged :class:`Tally` on rank 0 (None on
    other ranks)."""
    dataset = open_pipeline_dataset(config.dataset, images=False)
    count = selected_count(dataset, config.dataset)
    n = len(dataset.class_names)
    ignored = ignored_class_indices(dataset.class_names, config.ignore_classes, config.class_map)
    ignored_tensor = torch.tensor(ignored, dtype=torch.long, device=device)
    has_masks = count > 0 and _first_mask(dataset) is not None
    if not has_masks and not config.boxes:
        raise ValueError(f"--dataset {config.dataset.kind}: the images have no ground-truth "
                         "masks; use --boxes for localization")
    thresholds = torch.tensor(config.thresholds, dtype=torch.float32, device=device)
    cam_thresholds = default_cam_thresholds()
    edges = pxap_edges(cam_thresholds)
    t = thresholds.numel()
    s = len(config.sources)
    confusions = [
        torch.zeros((t if src.kind == "maps" else 1, n, n), dtype=torch.long, device=device)
        for src in config.sources
    ]
    per_image: list[dict] = [{} for _ in range(s)]
    pairs: list[dict] = [{} for _ in range(s)]
    pxap: list[torch.Tensor | None] = [
        torch.zeros((2, edges.numel() + 1), dtype=torch.long)
        if config.boxes and has_masks and src.kind == "maps" else None
        for src in config.sources
    ]
    indices = distributed.shard(list(range(count)))
    loader = DataLoader(_Items(dataset, config.sources, config.boxes), batch_size=1,
                        sampler=indices, num_workers=config.workers, collate_fn=_first)
    bar = tqdm(loader, total=len(indices), unit="img", desc="evaluate", dynamic_ncols=True,
               disable=not config.progress or not distributed.is_main())
    for index, sample_id, gt, boxes, box_labels, loaded, error in bar:
        if error is not None:
            raise error[0](error[1])
        gt = gt.to(device) if gt is not None else None
        counted = relabel(gt, ignored_tensor, 255) if ignored and gt is not None else gt
        for k, (source, (data, classes, path, predicted)) in enumerate(
            zip(config.sources, loaded, strict=True)
        ):
            if gt is not None:
                conf = _image_confusions(source, data.to(device), classes, counted, thresholds,
                                         n, path, sample_id, ignored_tensor)
                confusions[k] += conf
                flat = conf.flatten()
                nonzero = flat.nonzero().flatten()
                per_image[k][index] = (nonzero.cpu(), flat[nonzero].cpu())
            if config.boxes and source.kind == "maps":
                pairs[k][index] = _pair_records(data, classes, predicted, boxes, box_labels,
                                                cam_thresholds, config.box_threshold, path)
                if pxap[k] is not None and gt is not None:
                    pxap[k] += _pxap_counts(data, classes, gt, box_labels, edges)
    return merge_tallies(n, tuple(dataset.class_names), tuple(dataset.ids[:count]), has_masks,
                         confusions, per_image, pairs if config.boxes else [],
                         pxap if config.boxes else [], ignored=ignored)


def _first_mask(dataset: Any) -> torch.Tensor | None:
    mask_of = getattr(dataset, "mask", None)
    if callable(mask_of):
        return mask_of(0)
    return dataset[0].mask


def _image_confusions(
    source: Source, data: torch.Tensor, classes: torch.Tensor | None, gt: torch.Tensor,
    thresholds: torch.Tensor, num_classes: int, path: Path, sample_id: str,
    ignored: torch.Tensor,
) -> torch.Tensor:
    """``(T, N, N)`` (maps) or ``(1, N, N)`` (a mask) confusion matrices of one image; ``gt``
    has the ``ignored`` classes' pixels at 255 already, their maps or mask labels go here."""
    size = tuple(data.shape[-2:])
    if size != tuple(gt.shape):
        what = "maps are" if source.kind == "maps" else "mask is"
        raise ValueError(
            f"{path}: {what} {size[1]}x{size[0]} (WxH) but the ground-truth mask of "
            f"{sample_id!r} is {gt.shape[1]}x{gt.shape[0]}; make maps at the images' sizes"
        )
    try:
        if source.kind == "maps":
            classes = classes.to(data.device)
            if ignored.numel():
                classes = relabel(classes, ignored, -1)
            return sweep_confusions(data, classes, gt, thresholds, num_classes)
        if ignored.numel():
            data = relabel(data, ignored, 0)
        return confusion_matrix(data, gt, num_classes)[None]
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def _pair_records(
    maps: torch.Tensor, classes: torch.Tensor, predicted: int, boxes: torch.Tensor | None,
    box_labels: torch.Tensor | None, cam_thresholds: torch.Tensor, box_threshold: float,
    path: Path,
) -> list[PairRecord]:
    """One record per ground-truth class of the image with boxes (its map, or none)."""
    if boxes is None or box_labels is None:
        raise ValueError(f"{path}: the data set has no boxes for this image; --boxes needs a "
                         "data set with boxes (voc-boxes, wsol, coco, yolo, synthetic)")
    records = []
    for label in sorted(set(box_labels.tolist())):
        gt = inclusive_boxes(boxes[box_labels == label])
        where = (classes == label).nonzero().flatten()
        scoremap = maps[int(where[0])] if where.numel() else None
        records.append(pair_record(scoremap, gt, cam_thresholds, box_threshold=box_threshold,
                                   correct=predicted == label))
    return records


def _predicted(path: Path) -> int:
    with np.load(path, allow_pickle=False) as data:
        if "predicted" not in data.files:
            raise ValueError(f"{path}: no 'predicted' class (top-1 localization needs map files "
                             "written by loupe maps)")
        return int(data["predicted"])


def _pxap_counts(
    maps: torch.Tensor, classes: torch.Tensor, gt: torch.Tensor,
    box_labels: torch.Tensor | None, edges: torch.Tensor,
) -> torch.Tensor:
    total = torch.zeros((2, edges.numel() + 1), dtype=torch.long)
    labels = sorted(set(box_labels.tolist())) if box_labels is not None else []
    for label in labels:
        where = (classes == label).nonzero().flatten()
        if not where.numel():
            continue
        binary = torch.where(gt == 255, 255, (gt == label).long())
        total += pxap_counts(maps[int(where[0])].to(gt.device), binary, edges)
    return total


def merge_tallies(
    num_classes: int, class_names: tuple[str, ...], ids: tuple[str, ...], has_masks: bool,
    confusions: list[torch.Tensor], per_image: list[dict], pairs: list[dict],
    pxap: list[torch.Tensor | None], *, ignored: tuple[int, ...] = (),
) -> Tally | None:
    """Sum the ranks' matrices (all-reduce) and gather their per-image parts on rank 0."""
    confusions = [distributed.all_reduce_sum(c).cpu() for c in confusions]
    pxap = [None if p is None else distributed.all_reduce_sum(p) for p in pxap]
    gathered = distributed.gather_objects((per_image, pairs))
    if gathered is None:
        return None
    merged_images: list[dict] = [{} for _ in confusions]
    merged_pairs: list[dict] = [{} for _ in pairs]
    for rank_images, rank_pairs in gathered:
        for k, part in enumerate(rank_images):
            merged_images[k].update(part)
        for k, part in enumerate(rank_pairs):
            merged_pairs[k].update(part)
    return Tally(num_classes, class_names, ids, has_masks, confusions, merged_images,
                 merged_pairs, pxap, ignored)


def per_image_confusions(tally: Tally, source: int, threshold_index: int) -> torch.Tensor:
    """``(I, N, N)`` int64: each image's matrix of ``source`` at one threshold, in data-set
    order (for the bootstrap)."""
    n = tally.num_classes
    cells = n * n
    stack = torch.zeros((len(tally.ids), cells), dtype=torch.long)
    for index, (flat, counts) in tally.per_image[source].items():
        keep = flat // cells == threshold_index
        stack[index, flat[keep] % cells] = counts[keep]
    return stack.view(-1, n, n)
