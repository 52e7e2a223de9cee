"""Pseudo-masks from a folder of map files (``loupe masks``): paletted PNGs in the VOC palette,
written atomically, resumable, sharded under ``torchrun``.

Each ``<maps>/<id>.npz`` becomes ``<out>/<id>.png`` by IRN's background-threshold rule
(:func:`loupe.masks.masks_from_maps`), or with ``confident=(fg, bg)`` a mask that keeps only
confident pixels (255 = ignore in between, :func:`loupe.masks.confident_masks`), optionally
refined by a dense CRF on the image (:func:`loupe.masks.crf_refine_mask`, which also fills
the 255 pixels).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from loupe import distributed
from loupe.data.base import IMAGE_SUFFIXES, rgb_tensor
from loupe.io import load_rgb, write_json
from loupe.mapsets.files import (
    check_map_classes,
    check_output_folder,
    check_same_run,
    load_map_file,
    output_path,
    read_run_description,
    remove_stale_temp_files,
)
from loupe.masks import confident_masks, crf_refine_mask, masks_from_maps, save_mask_png

logger = logging.getLogger(__name__)

RUN_FILE = "masks.json"
ImageSource = Callable[[str], torch.Tensor]


def map_ids(folder: Path) -> list[str]:
    """The image ids of a map folder (``<id>.npz`` files, sub-folders included), sorted; a
    ValueError naming the folder when it has none."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--maps {folder}: folder not found")
    ids = sorted(p.relative_to(folder).with_suffix("").as_posix()
                 for p in folder.rglob("*.npz") if not p.name.startswith("."))
    if not ids:
        raise ValueError(f"--maps {folder}: empty maps folder (no <id>.npz files)")
    return ids


def pseudo_mask(
    maps: torch.Tensor, classes: torch.Tensor, *, threshold: float,
    confident: tuple[float, float] | None = None, image: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(H, W)`` long mask of one image's maps ``(K, H, W)`` with labels ``classes``
    ``(K,)``; refined by the dense CRF when ``image`` ``(3, H, W)`` uint8 is given."""
    if confident is not None:
        mask = confident_masks(maps, classes, *confident)
    else:
        mask = masks_from_maps(maps, classes, threshold)
    if image is not None:
        mask = crf_refine_mask(image, mask)
    return mask


def folder_images(folder: Path) -> ImageSource:
    """``id -> (3, H, W) uint8`` from ``folder/<id>.<jpg|png|...>``."""

    def load(sample_id: str) -> torch.Tensor:
        for suffix in IMAGE_SUFFIXES:
            path = output_path(folder, sample_id, suffix)
            if path.is_file():
                return rgb_tensor(load_rgb(path))
        raise FileNotFoundError(f"--images {folder}: no image file for {sample_id!r} "
                                f"({sample_id}.jpg, .png, ...)")

    return load


def dataset_images(dataset: Any) -> ImageSource:
    """``id -> (3, H, W) uint8`` read through a data set."""
    index = {sample_id: i for i, sample_id in enumerate(dataset.ids)}

    def load(sample_id: str) -> torch.Tensor:
        if sample_id not in index:
            raise ValueError(f"image {sample_id!r} of the maps is not in the data set")
        image = dataset[index[sample_id]].image
        return rgb_tensor(image)

    return load


def maps_run(maps: Path) -> tuple[str | None, int | None]:
    """What ``masks.json`` records of the maps: a digest of ``maps.json`` (its settings,
    model fingerprint included; not its extent), and the data set's class count it records;
    ``(None, None)`` for a folder without ``maps.json``."""
    path = maps / "maps.json"
    if not path.is_file():
        return None, None
    described = read_run_description(path, "maps run description (maps.json)")
    described.pop("extent", None)
    text = json.dumps(described, sort_keys=True, separators=(",", ":"))
    names = described.get("class_names")
    return (f"sha256:{hashlib.sha256(text.encode()).hexdigest()}",
            len(names) if isinstance(names, list) else None)


#: What ``masks.json`` says in words when a resume finds these keys changed.
CHANGED = {"maps_run": "the maps in --maps were remade with other settings or weights since "
                       "these masks were made, so they are stale"}


@dataclass(frozen=True)
class MasksConfig:
    """What ``loupe masks`` does (see its ``--help``). ``maps_name``: how ``masks.json`` names
    the maps folder (default: its path; ``loupe compare`` gives it relative to its folder, so
    that a comparison folder can move). ``num_classes``: the data set's class count, which
    every map's class must fit (default: what the maps' ``maps.json`` records)."""

    maps: Path
    out: Path
    threshold: float = 0.25
    confident: tuple[float, float] | None = None
    crf: bool = False
    progress: bool = True
    maps_name: str | None = None
    num_classes: int | None = None

    def describe(self, images: str | None, maps: str | None = None) -> dict[str, Any]:
        return {"format": "loupe masks 1: <id>.png paletted (VOC palette), values = labels",
                "maps": self.maps_name or str(self.maps), "maps_run": maps,
                "threshold": self.threshold,
                "confident": list(self.confident) if self.confident else None,
                "crf": self.crf, "images": images}


def write_pseudo_masks(
    config: MasksConfig, device: torch.device, images: ImageSource | None = None,
    images_description: str | None = None,
) -> tuple[int, int]:
    """Write the masks of this rank's share of the map files; returns (written, skipped).
    Map files with classes outside the data set's (``config.num_classes`` or ``maps.json``'s)
    are refused, naming the file."""
    if config.confident is not None and config.confident[1] > config.confident[0]:
        raise ValueError(f"--confident FG BG needs BG <= FG, got {list(config.confident)}")
    if config.crf and images is None:
        raise ValueError("--crf needs the images: give --images DIR or the data set options")
    ids = map_ids(config.maps)
    out = Path(config.out)
    check_output_folder(out, RUN_FILE, "a masks run")
    digest, recorded_classes = maps_run(config.maps)
    num_classes = config.num_classes or recorded_classes
    description = config.describe(images_description, digest)
    check_same_run(out / RUN_FILE, description, "masks run description (masks.json)",
                   reasons=CHANGED)
    distributed.barrier()
    if distributed.is_main():
        remove_stale_temp_files(out)
        write_json(out / RUN_FILE, description)
    distributed.barrier()
    mine = distributed.shard(ids)
    written = skipped = 0
    bar = tqdm(mine, unit="img", desc="masks", dynamic_ncols=True,
               disable=not config.progress or not distributed.is_main())
    for sample_id in bar:
        target = output_path(out, sample_id, ".png")
        if target.is_file():
            skipped += 1
            continue
        mask = _mask_of(sample_id, config, images, num_classes, device)
        save_mask_png(target, mask)
        written += 1
    return written, skipped


def _mask_of(sample_id: str, config: MasksConfig, images: ImageSource | None,
             num_classes: int | None, device: torch.device) -> torch.Tensor:
    """The pseudo-mask of one map file, its classes checked (see
    :func:`write_pseudo_masks`)."""
    source = output_path(config.maps, sample_id, ".npz")
    maps, classes = load_map_file(source)
    image = None
    if config.crf:
        image = images(sample_id)  # type: ignore[misc]
        if tuple(image.shape[-2:]) != maps.shape[-2:]:
            raise ValueError(f"{source}: maps are {maps.shape[2]}x{maps.shape[1]} but the "
                             f"image of {sample_id!r} is {image.shape[2]}x{image.shape[1]}")
    if num_classes is not None:
        check_map_classes(classes, num_classes, source)
    if classes.size and int(classes.max()) > 254:
        raise ValueError(f"{source}: label {int(classes.max())} does not fit a PNG mask "
                         "(at most 254)")
    return pseudo_mask(torch.from_numpy(maps).to(device), torch.from_numpy(classes),
                       threshold=config.threshold, confident=config.confident, image=image)
