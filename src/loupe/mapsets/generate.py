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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from loupe import distributed
from loupe.api import explain
from loupe.data.base import rgb_tensor
from loupe.data.mapping import ClassMapping, class_correspondence, mapped_scores, mapped_targets
from loupe.data.spec import open_spec, selected_count
from loupe.io import save_npz
from loupe.layers import find_target_layer
from loupe.mapsets.claims import ChunkClaims, record_run
from loupe.mapsets.files import check_output_folder, map_file_arrays, output_path
from loupe.mapsets.settings import (  # MEMORY_OPTIONS: re-exported (loupe.comparison)
    CHANGED,
    MEMORY_OPTIONS,  # noqa: F401
    MapsConfig,
    MapsResult,
    describe_run,
)
from loupe.models import PreprocessingOptions, load_classifier
from loupe.models.fingerprint import classifier_fingerprint
from loupe.registry import get_method

logger = logging.getLogger(__name__)

RUN_FILE = "maps.json"
#: The progress bar: images done to a tenth (it moves inside a batch), images per second.
BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


# --------------------------------------------------------------------------- functional core


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
    progress: Callable[[float], None] | None = None,
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
        progress: told how many of the ``B`` images are done (a float, over all scales).

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
    for step, scale in enumerate(scales):
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = images if size == (h, w) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1
        )
        t = targets
        if flip:
            x, t = torch.cat([x, x.flip(-1)]), torch.cat([targets, targets])
        report = _scale_progress(progress, step, len(scales), b, x.shape[0])
        maps = explain(model, x, t, method=method, target_layer=target_layer, upsample=False,
                       autocast=autocast, progress=report, **dict(options or {})).float()
        for i, out_size in enumerate(sizes):
            up = _resize(maps[i], out_size)
            if flip:
                up = up + _resize(maps[b + i], out_size).flip(-1)
            totals[i] += up
    return totals


def _scale_progress(progress: Callable[[float], None] | None, step: int, steps: int,
                    images: int, rows: int) -> Callable[[float], None] | None:
    """The progress callback of scale ``step`` of ``steps``, whose input has ``rows`` rows
    (the ``images``, and their flips): images done over all scales."""
    if progress is None:
        return None
    return lambda done: progress(images * (step + done / rows) / steps)


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


@dataclass
class _Run:
    """What the batches of one ``generate_maps`` call share."""

    config: MapsConfig
    model: nn.Module
    mapping: ClassMapping
    mean: torch.Tensor
    std: torch.Tensor
    ids: list[str]
    paths: list[Path]
    bar: Any
    warned_large: bool = False


def generate_maps(config: MapsConfig, device: torch.device) -> MapsResult:
    """Write ``<out>/<id>.npz`` for every image of the data set not yet done and
    ``<out>/maps.json`` (rank 0). Under ``torchrun`` each rank takes its share of the chunks
    (call :func:`loupe.distributed.init_distributed` first); processes started separately on
    the same ``out`` share the chunks through lock files (:mod:`loupe.mapsets.claims`)."""
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
    correspondence = {**correspondence, **_unmatched(correspondence, dataset, mapping)}
    count = selected_count(dataset, config.dataset)
    out = Path(config.out)
    check_output_folder(out, RUN_FILE, "a maps run")
    fingerprint = classifier_fingerprint(classifier.model, config.weights)
    description = describe_run(config, classifier, dataset, correspondence, fingerprint)
    record_run(out / RUN_FILE, description, "maps run description (maps.json)",
               {"images": count}, CHANGED)

    ids = list(dataset.ids[:count])
    paths = [output_path(out, i, ".npz") for i in ids]
    chunks = [list(range(s, min(s + config.batch_size, count)))
              for s in range(0, count, config.batch_size)]
    mine = distributed.shard(chunks)
    share = sum(len(c) for c in mine)
    done = sum(paths[i].is_file() for c in mine for i in c)
    model, preprocessing = classifier.model.to(device), classifier.preprocessing
    claims = ChunkClaims(out, mine, paths)
    loader = DataLoader(_Images(dataset), batch_sampler=claims, num_workers=config.workers,
                        collate_fn=_keep_list, pin_memory=device.type == "cuda")
    bar = _progress_bar(share, done, config.progress)
    run = _Run(config, model, mapping,
               torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1),
               torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1), ids, paths, bar)
    written = 0
    start = time.perf_counter()
    try:
        with bar:
            for items in loader:
                written += sum(_process_group(group, run, device)
                               for group in _same_size_groups(items, config.size))
                claims.finished(items[0][0])
    finally:
        claims.release_all()
    seconds = time.perf_counter() - start
    result = MapsResult(share, written, share - written - claims.elsewhere, seconds,
                        claims.elsewhere)
    # no "rank N:" here: the command line's log format adds it under torchrun only
    logger.info("%d map files written, %d already there, %d by other processes "
                "(%.1f images/s)", written, result.skipped, result.elsewhere,
                result.images_per_second)
    return result


def _progress_bar(share: int, done: int, enabled: bool) -> tqdm:
    """The ``maps`` bar of this rank's ``share`` of images (shown on rank 0 only)."""
    world = distributed.world_size()
    label = f"maps (rank {distributed.rank()} of {world})" if world > 1 else "maps"
    return tqdm(total=share, initial=done, unit="img", desc=label, dynamic_ncols=True,
                disable=not enabled or not distributed.is_main(), bar_format=BAR)


def _unmatched(correspondence: dict[str, Any], dataset: Any, mapping: ClassMapping
               ) -> dict[str, Any]:
    """With a class map, the data-set classes (not the background) without a counterpart,
    by name: what ``loupe evaluate`` leaves out of the scores of these maps."""
    if "class_map" not in correspondence:
        return {}
    names = list(dataset.class_names)
    return {"without_counterpart": [names[c] for c in range(1, len(names)) if not mapping[c]]}


def _same_size_groups(items: list, size: int | None) -> list[list]:
    """Items grouped by image size, in order of first appearance (all one group when every
    image is resized to ``size``)."""
    if size is not None:
        return [items]
    groups: dict[tuple[int, ...], list] = {}
    for item in items:
        groups.setdefault(tuple(item[1].shape), []).append(item)
    return list(groups.values())


def _process_group(group: list, run: _Run, device: torch.device) -> int:
    """Maps of one batch of same-size images; writes the files not yet there; returns how
    many it wrote. NaN or infinite logits or maps are an error naming the image."""
    config, indices = run.config, [item[0] for item in group]
    todo = [j for j, index in enumerate(indices) if not run.paths[index].is_file()]
    if not todo:
        return 0
    sizes = [tuple(item[1].shape[-2:]) for item in group]
    pixels = torch.stack([_input_image(item[1].to(device), run, item[0]) for item in group])
    x = (pixels - run.mean) / run.std
    labels = torch.stack([item[2] for item in group]).to(device)
    with torch.no_grad():
        logits = run.model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"--model {config.model} does not return class logits (B, classes)")
    broken = (~torch.isfinite(logits).all(1)).nonzero().flatten().tolist()
    if broken:
        raise ValueError(f"image {run.ids[indices[broken[0]]]!r}: the classifier's logits are "
                         f"NaN or infinite (check --model/--weights); no map file written")
    chosen = batch_targets(logits, labels, run.mapping, config.topk)
    before = run.bar.n
    if chosen.classes.shape[1]:
        maps = multiscale_maps(
            run.model, x, chosen.model_classes, config.method, sizes, scales=config.scales,
            flip=config.flip, target_layer=config.target_layer, autocast=config.amp,
            options=config.options,
            progress=lambda done: _show(run.bar, before + done * len(todo) / len(group)),
        )
    else:
        maps = [x.new_zeros((0, *s)) for s in sizes]
    for j in todo:
        valid = chosen.classes[j] >= 0
        if not torch.isfinite(maps[j][valid]).all():
            raise ValueError(f"image {run.ids[indices[j]]!r}: its {config.method} maps hold NaN "
                             "or infinite values; no map file written")
        arrays = map_file_arrays(maps[j][valid], chosen.classes[j][valid],
                                 chosen.scores[j][valid], int(chosen.predicted[j]))
        save_npz(run.paths[indices[j]], **arrays)
    _show(run.bar, before + len(todo))
    return len(todo)


def _show(bar: Any, position: float) -> None:
    """Move the progress bar to ``position`` images (fractions inside a batch)."""
    if position > bar.n:
        bar.update(position - bar.n)


def _input_image(image: torch.Tensor, run: _Run, index: int) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> float in [0, 1] at the model's input size
    (:func:`model_input_size`); warns once per run when ``max_side`` shrinks an image."""
    pixels = image.float() / 255
    height, width = pixels.shape[-2:]
    size = model_input_size(height, width, run.config.size, run.config.max_side)
    if size == (height, width):
        return pixels
    if run.config.size is None and not run.warned_large:
        run.warned_large = True
        logger.warning("images larger than --max-side %d (first: %r, %dx%d) are explained at "
                       "%d pixels on their longer side, their maps upsampled back",
                       run.config.max_side, run.ids[index], width, height, run.config.max_side)
    return F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False,
                         antialias=True)[0]


def model_input_size(height: int, width: int, size: int | None, max_side: int | None
                     ) -> tuple[int, int]:
    """The model's input size for an image of ``height x width``: ``size x size`` when given;
    else the image's own size, shrunk (aspect ratio kept, rounded) so that its longer side is
    ``max_side`` when it is longer."""
    if size is not None:
        return (size, size)
    longest = max(height, width)
    if max_side is None or longest <= max_side:
        return (height, width)
    return (max(1, round(height * max_side / longest)), max(1, round(width * max_side / longest)))
