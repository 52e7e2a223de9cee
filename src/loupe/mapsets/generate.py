"""Data-set-wide map generation (``loupe maps``): one map file per image, resumable, sharded.

The maps of an image are those of its ground-truth classes (its image-level labels) or of its
``topk`` best-scoring classes, each computed for the classifier output that stands for the
data-set class (:func:`loupe.data.mapping.class_correspondence`). With several ``scales`` and
``flip`` this is the IRN protocol (Ahn et al., "Weakly Supervised Learning of Instance
Segmentation with Inter-pixel Relations", CVPR 2019, ``make_cam.py``): the image is rescaled by
each factor and also flipped horizontally; every map is upsampled to the image's size
(bilinear), flipped maps are flipped back, and all are summed.

Batches are fixed chunks of ``batch_size`` consecutive images of the data set, and under
``torchrun`` whole chunks are dealt to ranks (``chunks[rank::world]``): every image is
computed with the same batch companions however many processes run and whether the run was
interrupted, so outputs are reproducible byte for byte (given deterministic kernels). Within a
chunk, images are batched together where their input sizes agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from loupe import __version__, distributed
from loupe.api import explain
from loupe.data.base import rgb_tensor
from loupe.data.mapping import ClassMapping, class_correspondence, mapped_scores, mapped_targets
from loupe.data.spec import DatasetSpec, open_spec, selected_count
from loupe.io import save_npz, write_json
from loupe.layers import find_target_layer
from loupe.mapsets.files import (
    check_same_run,
    map_file_arrays,
    output_path,
    remove_stale_temp_files,
)
from loupe.models import Classifier, PreprocessingOptions, load_classifier
from loupe.registry import get_method

logger = logging.getLogger(__name__)

RUN_FILE = "maps.json"


# --------------------------------------------------------------------------- functional core


# Options that bound memory and never change the maps (tested for every chunked method): left
# out of maps.json, so a run can resume with another value (say, smaller chunks after
# running out of memory).
MEMORY_OPTIONS = ("chunk_size",)

def multiscale_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    sizes: Sequence[tuple[int, int]],
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    target_layer: str | None = None,
    autocast: bool = False,
    options: Mapping[str, object] | None = None,
) -> list[torch.Tensor]:
    """Maps of ``targets`` summed over ``scales`` (and horizontal flips), at each image's size.

    Args:
        model: the classifier.
        images: ``(B, 3, h, w)`` normalised model input.
        targets: ``(B, K)`` classifier classes, -1 = padding (its maps are zero).
        method: a registered method name.
        sizes: ``B`` output sizes ``(H_i, W_i)`` (the images' original sizes).
        scales: factors of ``(h, w)``; the scaled input is ``round(h * s) x round(w * s)``
            (bilinear, antialiased when shrinking).
        flip: also explain the horizontally flipped input and add its maps flipped back.

    Returns:
        ``B`` float32 tensors ``(K, H_i, W_i)`` on the images' device: ``sum over scales and
        flips of upsample(map)`` (IRN's ``make_cam`` sum, before any normalisation).
    """
    if images.dim() != 4 or targets.dim() != 2 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"images (B, 3, h, w) and targets (B, K) must agree, got "
                         f"{tuple(images.shape)} and {tuple(targets.shape)}")
    if len(sizes) != images.shape[0]:
        raise ValueError(f"{len(sizes)} output sizes for {images.shape[0]} images")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    b, k = targets.shape
    h, w = images.shape[-2:]
    if target_layer is None and get_method(method).uses_layer:
        target_layer = find_target_layer(model, images)  # once, not once per scale
    totals = [images.new_zeros((k, *size), dtype=torch.float32) for size in sizes]
    for scale in scales:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = images if size == (h, w) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1
        )
        t = targets
        if flip:
            x, t = torch.cat([x, x.flip(-1)]), torch.cat([targets, targets])
        maps = explain(model, x, t, method=method, target_layer=target_layer, upsample=False,
                       autocast=autocast, **dict(options or {})).float()
        for i, out_size in enumerate(sizes):
            up = _resize(maps[i], out_size)
            if flip:
                up = up + _resize(maps[b + i], out_size).flip(-1)
            totals[i] += up
    return totals


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


@dataclass(frozen=True)
class BatchTargets:
    """Which maps each image of a batch gets.

    classes: ``(B, K)`` data-set classes (the labels the maps paint), -1 = padding.
    model_classes: ``(B, K)`` the classifier output explained for each, -1 = padding or no
        counterpart (its map is all zero).
    scores: ``(B, K)`` the classifier's (best member's) logit for each class, -inf where none.
    predicted: ``(B,)`` top-1 data-set class by those scores, -1 when none has a counterpart.
    """

    classes: torch.Tensor
    model_classes: torch.Tensor
    scores: torch.Tensor
    predicted: torch.Tensor


def batch_targets(
    logits: torch.Tensor, labels: torch.Tensor, mapping: ClassMapping, topk: int | None = None
) -> BatchTargets:
    """The maps to compute for a batch: the classes in ``labels`` ``(B, C_data)`` (multi-hot),
    or with ``topk`` the ``topk`` best-scoring data-set classes with a counterpart, each for
    its best-scoring classifier class (:func:`loupe.data.mapping.mapped_targets`)."""
    scores = mapped_scores(logits.float(), mapping)  # (B, C_data), -inf: no counterpart
    best = mapped_targets(logits, mapping)
    finite = torch.isfinite(scores)
    any_finite = finite.any(1)
    predicted = torch.where(any_finite, scores.argmax(1), torch.full_like(any_finite, -1,
                                                                           dtype=torch.long))
    if topk is not None:
        k = min(topk, scores.shape[1])
        ranked = scores.topk(k, dim=1)
        chosen = ranked.indices.where(torch.isfinite(ranked.values), -1)
        rows = [row[row >= 0] for row in chosen]
    else:
        if labels.shape != scores.shape:
            raise ValueError(f"labels {tuple(labels.shape)} do not match the data set's "
                             f"{scores.shape[1]} classes")
        rows = [row.nonzero().flatten() for row in labels.to(scores.device) > 0]
    width = max((len(r) for r in rows), default=0)
    classes = torch.full((len(rows), width), -1, dtype=torch.long, device=scores.device)
    for i, row in enumerate(rows):
        classes[i, : len(row)] = row
    safe = classes.clamp(min=0)
    model_classes = best.gather(1, safe).where(classes >= 0, -1)
    picked = scores.gather(1, safe).where(classes >= 0, float("-inf"))
    return BatchTargets(classes, model_classes, picked, predicted)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class MapsConfig:
    """Everything ``loupe maps`` needs (see its ``--help`` for each option)."""

    dataset: DatasetSpec
    out: Path
    model: str
    weights: str | None = None
    method: str = "gradcam"
    options: dict[str, object] = field(default_factory=dict)
    target_layer: str | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    topk: int | None = None
    class_map: str | None = None
    label_offset: int | None = None
    size: int | None = None
    batch_size: int = 8
    workers: int = 0
    amp: bool = False
    num_classes: int | None = None
    seed: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: str | None = None
    patch: str | None = None
    progress: bool = True

    def check(self) -> None:
        """A ValueError naming the first option out of range."""
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"--scales must be positive numbers, got {list(self.scales)}")
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"--scales has repeats: {list(self.scales)}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"--topk must be at least 1, got {self.topk}")
        if self.size is not None and self.size < 8:
            raise ValueError(f"--size must be at least 8 pixels, got {self.size}")
        get_method(self.method)


@dataclass(frozen=True)
class MapsResult:
    """What one process did: images in its share, maps written now, already there, time."""

    images: int
    written: int
    skipped: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


class _Images(Dataset):
    """Items ``(index, (3, H, W) uint8 image, labels)`` of a data set, for a DataLoader."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        sample = self.dataset[index]
        return index, rgb_tensor(sample.image), sample.labels


def _keep_list(items: list) -> list:
    return items


def describe_run(
    config: MapsConfig, classifier: Classifier, dataset: Any, count: int,
    correspondence: dict[str, Any],
) -> dict[str, Any]:
    """The ``maps.json`` of a run: deterministic (no times, no machine details), so that a
    resumed run can check it continues the same run."""
    return {
        "format": "loupe maps 1: <id>.npz with maps (K, H, W) float16 divided by peak (K,) "
                  "float32, classes (K,) int64, scores (K,) float32, predicted () int64",
        "loupe": __version__,
        "method": config.method,
        "options": {k: _plain(v) for k, v in sorted(config.options.items())
                    if k not in MEMORY_OPTIONS},
        "target_layer": config.target_layer,
        "scales": list(config.scales),
        "flip": config.flip,
        "size": config.size,
        "targets": f"top-{config.topk}" if config.topk else "image-level labels",
        "correspondence": correspondence,
        "classifier": classifier.description,
        "mean": list(classifier.preprocessing.mean),
        "std": list(classifier.preprocessing.std),
        "amp": config.amp,
        "dataset": config.dataset.describe(),
        "class_names": list(dataset.class_names),
        "images": count,
    }


def _plain(value: object) -> object:
    """An option value as JSON: numbers, strings, booleans and None as they are, sequences
    as lists, anything else as its repr."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return repr(value)


def generate_maps(config: MapsConfig, device: torch.device) -> MapsResult:
    """Write ``<out>/<id>.npz`` for every image of the data set not yet done (this rank's
    share under ``torchrun``; call :func:`loupe.distributed.init_distributed`
    first) and ``<out>/maps.json`` (rank 0)."""
    config.check()
    dataset = open_spec(config.dataset, images=True)
    classifier = load_classifier(
        config.model, config.weights, num_classes=config.num_classes, seed=config.seed,
        options=PreprocessingOptions(mean=config.mean, std=config.std, scale=config.scale),
        patch=config.patch,
    )
    mapping, correspondence = class_correspondence(
        dataset.class_names, classifier.num_outputs, model_offset=classifier.label_offset,
        class_map=config.class_map, label_offset=config.label_offset,
    )
    count = selected_count(dataset, config.dataset)
    out = Path(config.out)
    description = describe_run(config, classifier, dataset, count, correspondence)
    check_same_run(out / RUN_FILE, description, "maps run description (maps.json)")
    distributed.barrier()  # every rank has checked before rank 0 writes or cleans up
    if distributed.is_main():
        stale = remove_stale_temp_files(out)
        if stale:
            logger.info("removed %d temporary files left by an interrupted run", len(stale))
        write_json(out / RUN_FILE, description)
    distributed.barrier()  # no rank writes maps while rank 0 cleans up

    ids = list(dataset.ids[:count])
    paths = [output_path(out, i, ".npz") for i in ids]
    chunks = [list(range(s, min(s + config.batch_size, count)))
              for s in range(0, count, config.batch_size)]
    mine = distributed.shard(chunks)
    share = sum(len(c) for c in mine)
    pending = [c for c in mine if any(not paths[i].is_file() for i in c)]
    done = share - sum(sum(not paths[i].is_file() for i in c) for c in pending)

    model = classifier.model.to(device)
    mean = torch.tensor(classifier.preprocessing.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(classifier.preprocessing.std, device=device).view(1, 3, 1, 1)
    loader = DataLoader(_Images(dataset), batch_sampler=pending, num_workers=config.workers,
                        collate_fn=_keep_list, pin_memory=device.type == "cuda")
    world = distributed.world_size()
    label = f"maps (rank {distributed.rank()} of {world})" if world > 1 else "maps"
    bar = tqdm(total=share, initial=done, unit="img", desc=label, dynamic_ncols=True,
               disable=not config.progress or not distributed.is_main())
    written = 0
    start = time.perf_counter()
    with bar:
        for items in loader:
            new = sum(_process_group(group, config, model, mapping, mean, std, device, paths)
                      for group in _same_size_groups(items, config.size))
            written += new
            bar.update(new)
    seconds = time.perf_counter() - start
    result = MapsResult(share, written, share - written, seconds)
    # no "rank N:" here: the command line's log format adds it under torchrun only
    logger.info("%d map files written, %d already there (%.1f images/s)",
                written, result.skipped, result.images_per_second)
    return result


def _same_size_groups(items: list, size: int | None) -> list[list]:
    """Items grouped by model input size, in order of first appearance (all one group when
    every image is resized to ``size``)."""
    if size is not None:
        return [items]
    groups: dict[tuple[int, ...], list] = {}
    for item in items:
        groups.setdefault(tuple(item[1].shape), []).append(item)
    return list(groups.values())


def _process_group(
    group: list, config: MapsConfig, model: nn.Module, mapping: ClassMapping,
    mean: torch.Tensor, std: torch.Tensor, device: torch.device, paths: list[Path],
) -> int:
    """Maps of one batch of same-size images; writes the files not yet there; returns how
    many it wrote."""
    indices = [item[0] for item in group]
    todo = [j for j, index in enumerate(indices) if not paths[index].is_file()]
    if not todo:
        return 0
    sizes = [tuple(item[1].shape[-2:]) for item in group]
    pixels = torch.stack([_input_image(item[1].to(device), config.size) for item in group])
    x = (pixels - mean) / std
    labels = torch.stack([item[2] for item in group]).to(device)
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"--model {config.model} does not return class logits (B, classes)")
    chosen = batch_targets(logits, labels, mapping, config.topk)
    if chosen.classes.shape[1]:
        maps = multiscale_maps(
            model, x, chosen.model_classes, config.method, sizes, scales=config.scales,
            flip=config.flip, target_layer=config.target_layer, autocast=config.amp,
            options=config.options,
        )
    else:
        maps = [x.new_zeros((0, *s)) for s in sizes]
    for j in todo:
        valid = chosen.classes[j] >= 0
        arrays = map_file_arrays(maps[j][valid], chosen.classes[j][valid],
                                 chosen.scores[j][valid], int(chosen.predicted[j]))
        save_npz(paths[indices[j]], **arrays)
    return len(todo)


def _input_image(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> float in [0, 1], resized to ``size x size`` when given."""
    pixels = image.float() / 255
    if size is None or tuple(pixels.shape[-2:]) == (size, size):
        return pixels
    return F.interpolate(pixels[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]
