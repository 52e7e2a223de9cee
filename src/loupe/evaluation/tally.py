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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from loupe import distributed
from loupe.data.spec import DatasetSpec, open_spec, selected_count
from loupe.evaluation.sources import (
    Source,
    check_source_files,
    ignored_class_indices,
    recorded_class_map,
    relabel,
)
from loupe.mapsets.files import load_map_file, output_path
from loupe.mapsets.guesses import guess_records, maps_topk, ranked_guesses, read_ranking
from loupe.masks.palette import load_mask_png
from loupe.metrics import (
    PairRecord,
    confusion_matrix,
    default_cam_thresholds,
    default_thresholds,
    inclusive_boxes,
    pair_record,
    pxap_counts,
    pxap_edges,
    sweep_confusions,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and how (see ``loupe evaluate --help``)."""

    dataset: DatasetSpec
    sources: tuple[Source, ...]
    thresholds: tuple[float, ...] = tuple(round(t, 6) for t in default_thresholds().tolist())
    boxes: bool = False
    box_threshold: float = 0.2
    loc_threshold: float = 0.2
    workers: int = 0
    progress: bool = True
    ignore_classes: tuple[str, ...] = ()
    class_map: str | None = None


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
    class_map: the class map applied because the folders' ``maps.json`` record it (no
        ``--class-map`` given), else None.
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
    class_map: str | None = None


@dataclass(frozen=True)
class SourceFile:
    """One source's file for one image: ``data`` is its maps ``(K, H, W)`` with ``classes``
    ``(K,)``, the ``predicted`` class and the maps' ``scores`` ``(K,)`` (boxes mode), or its
    mask ``(H, W)``."""

    data: torch.Tensor
    classes: torch.Tensor | None
    path: Path
    predicted: int | None = None
    scores: torch.Tensor | None = None


@dataclass(frozen=True)
class Item:
    """Image ``index``: its ground truth (mask, and boxes in boxes mode) and every source's
    file for it; or ``error`` (type and message) when one could not be read."""

    index: int
    sample_id: str | None = None
    mask: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    box_labels: torch.Tensor | None = None
    files: tuple[SourceFile, ...] = ()
    error: tuple[type, str] | None = None


class _Items(Dataset):
    """:class:`Item` ``i`` of a data set. Errors are returned, not raised, so that a
    DataLoader worker's message reaches the user unchanged."""

    def __init__(self, dataset: Any, sources: Sequence[Source], boxes: bool) -> None:
        self.dataset = dataset
        self.sources = sources
        self.boxes = boxes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item:
        try:
            sample = self.dataset[index]
            files = tuple(self._read(source, sample.id) for source in self.sources)
            boxes = sample.boxes if self.boxes else None
            return Item(index, sample.id, sample.mask, boxes, sample.box_labels, files)
        except (ValueError, FileNotFoundError) as error:
            return Item(index, error=(type(error), str(error)))

    def _read(self, source: Source, sample_id: str) -> SourceFile:
        path = output_path(source.folder, sample_id, source.suffix)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no {source.kind[:-1]} file for image {sample_id!r} of the data "
                f"set (in --{source.kind} {source.folder})"
            )
        if source.kind == "masks":
            return SourceFile(load_mask_png(path), None, path)
        maps, classes = load_map_file(path)
        predicted, scores = read_ranking(path) if self.boxes else (None, None)
        return SourceFile(torch.from_numpy(maps), torch.from_numpy(classes), path, predicted,
                          scores)


def _first(items: list[Item]) -> Item:
    return items[0]


@dataclass
class _Sums:
    """One rank's running sums, one entry per source (see :class:`Tally`), and each maps
    source's ``--topk`` (:func:`maps_topk`)."""

    confusions: list[torch.Tensor]
    per_image: list[dict] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)
    pxap: list[torch.Tensor | None] = field(default_factory=list)
    topk: list[int | None] = field(default_factory=list)


def evaluate_sources(config: EvaluationConfig, device: torch.device) -> Tally | None:
    """One pass over this rank's images; returns the merged :class:`Tally` on rank 0 (None on
    other ranks). Without ``config.class_map``, the class map the folders' ``maps.json``
    record is applied (:func:`recorded_class_map`). Every file is checked to exist first."""
    dataset = open_spec(config.dataset, images=False)
    count = selected_count(dataset, config.dataset)
    n = len(dataset.class_names)
    recorded = None if config.class_map else recorded_class_map(config.sources)
    ignored = ignored_class_indices(dataset.class_names, config.ignore_classes, config.class_map,
                                    recorded)
    check_source_files(config.sources, dataset.ids[:count])
    has_masks = count > 0 and _first_mask(dataset) is not None
    if not has_masks and not config.boxes:
        raise ValueError(f"--dataset {config.dataset.kind}: the images have no ground-truth "
                         "masks; use --boxes for localization")
    thresholds = torch.tensor(config.thresholds, dtype=torch.float32, device=device)
    edges = pxap_edges(default_cam_thresholds())
    sums = _Sums(
        [torch.zeros((thresholds.numel() if s.kind == "maps" else 1, n, n), dtype=torch.long,
                     device=device) for s in config.sources],
        [{} for _ in config.sources], [{} for _ in config.sources],
        [torch.zeros((2, edges.numel() + 1), dtype=torch.long)
         if config.boxes and has_masks and s.kind == "maps" else None for s in config.sources],
    )
    sums.topk = [maps_topk(s.folder) if s.kind == "maps" else None for s in config.sources]
    indices = distributed.shard(list(range(count)))
    loader = DataLoader(_Items(dataset, config.sources, config.boxes), batch_size=1,
                        sampler=indices, num_workers=config.workers, collate_fn=_first)
    bar = tqdm(loader, total=len(indices), unit="img", desc="evaluate", dynamic_ncols=True,
               disable=not config.progress or not distributed.is_main())
    ignored_tensor = torch.tensor(ignored, dtype=torch.long, device=device)
    for item in bar:
        _add_item(sums, item, config, thresholds, edges, n, ignored_tensor)
    if not config.boxes:
        sums.pairs, sums.pxap = [], []
    tally = merge_tallies(n, tuple(dataset.class_names), tuple(dataset.ids[:count]), has_masks,
                          sums, ignored=ignored)
    if tally is not None and recorded is not None:
        tally.class_map = recorded.name
    return tally


def _add_item(
    sums: _Sums, item: Item, config: EvaluationConfig, thresholds: torch.Tensor,
    edges: torch.Tensor, num_classes: int, ignored: torch.Tensor,
) -> None:
    """Add one image's confusion matrices (and, in boxes mode, its localization records and
    PxAP counts) to ``sums``."""
    if item.error is not None:
        raise item.error[0](item.error[1])
    gt = item.mask.to(thresholds.device) if item.mask is not None else None
    counted = relabel(gt, ignored, 255) if ignored.numel() and gt is not None else gt
    for k, (source, file) in enumerate(zip(config.sources, item.files, strict=True)):
        if gt is not None:
            conf = _image_confusions(source, file, counted, thresholds, num_classes,
                                     item.sample_id, ignored)
            sums.confusions[k] += conf
            flat = conf.flatten()
            nonzero = flat.nonzero().flatten()
            sums.per_image[k][item.index] = (nonzero.cpu(), flat[nonzero].cpu())
        if config.boxes and source.kind == "maps":
            sums.pairs[k][item.index] = _pair_records(file, item.boxes, item.box_labels,
                                                      config, sums.topk[k])
            if sums.pxap[k] is not None and gt is not None:
                sums.pxap[k] += _pxap_counts(file, gt, item.box_labels, edges)


def _first_mask(dataset: Any) -> torch.Tensor | None:
    mask_of = getattr(dataset, "mask", None)
    if callable(mask_of):
        return mask_of(0)
    return dataset[0].mask


def _image_confusions(
    source: Source, file: SourceFile, gt: torch.Tensor, thresholds: torch.Tensor,
    num_classes: int, sample_id: str | None, ignored: torch.Tensor,
) -> torch.Tensor:
    """``(T, N, N)`` (maps) or ``(1, N, N)`` (a mask) confusion matrices of one image; ``gt``
    has the ``ignored`` classes' pixels at 255 already, their maps or mask labels go here."""
    data, classes, path = file.data.to(gt.device), file.classes, file.path
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
    file: SourceFile, boxes: torch.Tensor | None, box_labels: torch.Tensor | None,
    config: EvaluationConfig, topk: int | None,
) -> list[PairRecord]:
    """One record per ground-truth class of the image with boxes (its map, or none), with
    the class against the image's guesses (CAM's ILSVRC protocol)."""
    maps, classes, predicted, path = file.data, file.classes, file.predicted, file.path
    cam_thresholds = default_cam_thresholds()
    if boxes is None or box_labels is None:
        raise ValueError(f"{path}: the data set has no boxes for this image; --boxes needs a "
                         "data set with boxes (voc-boxes, wsol, coco, yolo, ilsvrc, synthetic)")
    gt_boxes = {label: inclusive_boxes(boxes[box_labels == label])
                for label in sorted(set(box_labels.tolist()))}
    guessed, guess_maps = ranked_guesses(maps, classes, file.scores, predicted, topk)
    guesses = guess_records(guessed, guess_maps, gt_boxes, threshold=config.loc_threshold,
                            heuristic=bool(topk and topk >= 3))
    records = []
    for label, gt in gt_boxes.items():
        where = (classes == label).nonzero().flatten()
        scoremap = maps[int(where[0])] if where.numel() else None
        record = pair_record(scoremap, gt, cam_thresholds, box_threshold=config.box_threshold,
                             correct=predicted == label)
        records.append(PairRecord(record.curve, record.cam_iou, record.correct, label,
                                  guesses[label]))
    return records


def _pxap_counts(
    file: SourceFile, gt: torch.Tensor, box_labels: torch.Tensor | None, edges: torch.Tensor,
) -> torch.Tensor:
    """PxAP counts of the maps of the image's box classes against their masks."""
    maps, classes = file.data, file.classes
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
    sums: _Sums, *, ignored: tuple[int, ...] = (),
) -> Tally | None:
    """Sum the ranks' matrices (all-reduce) and gather their per-image parts on rank 0."""
    confusions = [distributed.all_reduce_sum(c).cpu() for c in sums.confusions]
    pxap = [None if p is None else distributed.all_reduce_sum(p) for p in sums.pxap]
    pairs = sums.pairs
    gathered = distributed.gather_objects((sums.per_image, pairs))
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


def per_image_stats(tally: Tally, source: int, thresholds: int) -> torch.Tensor:
    """``(I, T, 3, N)`` int64: each image's :func:`loupe.metrics.confusion_stats` (true
    positives, ground-truth and predicted counts per class) at each of the ``T`` thresholds
    of ``source`` (``T = 1`` for a masks source), in data-set order, built from the sparse
    per-image matrices without making them dense."""
    n = tally.num_classes
    stats = torch.zeros((len(tally.ids), thresholds, 3, n), dtype=torch.long)
    for index, (flat, counts) in tally.per_image[source].items():
        t, row, column = flat // (n * n), flat // n % n, flat % n
        if t.numel() and int(t.max()) >= thresholds:
            raise ValueError(f"image {index} has matrices for more than {thresholds} thresholds")
        image = stats[index]
        hits = row == column
        image[:, 0].index_put_((t[hits], row[hits]), counts[hits], accumulate=True)
        image[:, 1].index_put_((t, row), counts, accumulate=True)
        image[:, 2].index_put_((t, column), counts, accumulate=True)
    return stats
