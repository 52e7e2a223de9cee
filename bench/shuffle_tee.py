"""Several shuffle variants from one set of passes, for the dev screening on a shared CPU.

Variants that differ only in ``weight``, ``top_k`` and ``accumulate`` use the same rounds (same
seed) and the same per-round gradients and logits; only the running sums differ
(:class:`loupe.methods._rounds.RoundSums`). :func:`tee_maps` runs the rounds once
(:func:`loupe.methods.shuffle.accumulate_rounds`, the library's own loop) and feeds every
variant's sums; :func:`write_tee_maps` writes one ``loupe maps``-format folder per variant,
image by image as ``loupe maps`` does (the same target choice, resizing and file format:
:mod:`loupe.mapsets.generate`'s functions).

Before the first image is written, :func:`check_against_explain` computes every variant both
ways on that image at T = 2 and stops if any differs from ``loupe.explain(method="shuffle")``
with the variant's options, so the shortcut cannot drift from the method.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import loupe
from loupe.data.base import rgb_tensor
from loupe.data.mapping import class_correspondence
from loupe.data.spec import open_spec
from loupe.hooks import hooked
from loupe.io import save_npz
from loupe.mapsets.files import map_file_arrays
from loupe.mapsets.generate import _resize, batch_targets
from loupe.methods._rounds import RoundSums
from loupe.methods._tiles import check_grids, draw_rounds, identity_round
from loupe.methods.shuffle import accumulate_rounds, gradient_maps
from loupe.models import PreprocessingOptions, load_classifier
from loupe.targets import resolve_targets

logger = logging.getLogger("shuffle_dev")
SUMS_OPTIONS = ("weight", "top_k", "accumulate")


class Tee:
    """Fans :meth:`RoundSums.add` out to several sums."""

    def __init__(self, sums: Mapping[str, RoundSums]) -> None:
        self.sums = dict(sums)

    def add(self, *args: Any) -> None:
        for value in self.sums.values():
            value.add(*args)


def tee_maps(model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
             shared: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]
             ) -> dict[str, torch.Tensor]:
    """``name -> (B, K, h, w)`` maps of ``x`` ``(B, C, h, w)`` for classifier ``classes``
    ``(B, K)`` (-1 padding): ``shared`` options (n_shuffles, seed, grids, score,
    include_original, chunk_size) with each variant's ``weight/top_k/accumulate``."""
    h, w = x.shape[-2:]
    generator = torch.Generator().manual_seed(int(shared.get("seed", 0)))
    grids = check_grids(tuple(shared.get("grids", (2, 3, 4))), h, w)
    rounds = draw_rounds(h, w, int(shared["n_shuffles"]), grids, jitter=True, offset="cyclic",
                         generator=generator, device=x.device)
    if shared.get("include_original", True):
        rounds.insert(0, identity_round(h, w, x.device))
    targets = resolve_targets(classes, x.shape[0], x.device)
    score = str(shared.get("score", "logit"))
    sums = {name: RoundSums(x.shape[0], targets.count, h * w, device=x.device, **dict(opts))
            for name, opts in variants.items()}
    with hooked(model, []), torch.enable_grad():
        accumulate_rounds(Tee(sums), model, x.detach(), targets, rounds,
                          lambda m, c, t: gradient_maps(m, c, t, "abs-max", score=score),
                          int(shared.get("chunk_size", 4)))
    return {name: s.result().unflatten(-1, (h, w)) for name, s in sums.items()}


def check_against_explain(model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
                          shared: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]
                          ) -> None:
    small = {**shared, "n_shuffles": 2}
    teed = tee_maps(model, x, classes, small, variants)
    plain = {k: v for k, v in small.items() if k != "chunk_size"}
    for name, opts in variants.items():
        direct = loupe.explain(model, x, classes, method="shuffle", upsample=False,
                               **plain, **dict(opts))
        if not torch.allclose(teed[name], direct, rtol=1e-4, atol=1e-6 * float(direct.max())):
            raise AssertionError(f"tee variant {name} differs from loupe.explain")
    logger.info("tee: %d variants equal loupe.explain on the first image", len(variants))


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def write_tee_maps(dev_set: Any, out: Mapping[str, Path], shared: Mapping[str, Any],
                   variants: Mapping[str, Mapping[str, Any]], batch_size: int = 8) -> None:
    """One folder ``out[name]`` of ``<id>.npz`` map files per variant for the dev half of
    ``dev_set`` (its ``model_args`` read as ``loupe maps`` reads them); resumable."""
    margs = dev_set.model_args
    dataset = open_spec(dev_set.spec, images=True)
    classifier = load_classifier(
        _option(margs, "--model"), _option(margs, "--weights"),
        options=PreprocessingOptions(scale=_option(margs, "--scale")),
        patch=_option(margs, "--patch"),
    )
    mapping, _ = class_correspondence(dataset.class_names, classifier.num_outputs,
                                      model_offset=classifier.label_offset,
                                      class_map=_option(margs, "--class-map"))
    size = int(_option(margs, "--size"))
    model = classifier.model
    mean = torch.tensor(classifier.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(classifier.preprocessing.std).view(1, 3, 1, 1)
    for folder in out.values():
        folder.mkdir(parents=True, exist_ok=True)
    checked = False
    for start in range(0, dev_set.dev, batch_size):
        ids = list(dataset.ids[start: min(start + batch_size, dev_set.dev)])
        if all((out[n] / f"{i}.npz").is_file() for n in out for i in ids):
            continue
        samples = [dataset[start + j] for j in range(len(ids))]
        images = [rgb_tensor(s.image) for s in samples]
        x = (torch.stack([_input_image(im, size) for im in images]) - mean) / std
        with torch.no_grad():
            logits = model(x)
        chosen = batch_targets(logits, torch.stack([s.labels for s in samples]), mapping)
        if chosen.classes.shape[1] == 0:
            maps = {n: x.new_zeros((len(ids), 0, size, size)) for n in variants}
        else:
            if not checked:
                check_against_explain(model, x[:1], chosen.model_classes[:1], shared, variants)
                checked = True
            maps = tee_maps(model, x, chosen.model_classes, shared, variants)
        for j, sample_id in enumerate(ids):
            valid = chosen.classes[j] >= 0
            for name, value in maps.items():
                arrays = map_file_arrays(_resize(value[j], tuple(images[j].shape[-2:]))[valid],
                                         chosen.classes[j][valid], chosen.scores[j][valid],
                                         int(chosen.predicted[j]))
                save_npz(out[name] / f"{sample_id}.npz", **arrays)
        logger.info("tee %s: %d/%d images", dev_set.name, start + len(ids), dev_set.dev)


def _input_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> float in [0, 1] at ``size x size``, as ``loupe maps --size``
    makes its model input (:func:`loupe.mapsets.generate._input_image`)."""
    pixels = image.float() / 255
    if tuple(pixels.shape[-2:]) == (size, size):
        return pixels
    return F.interpolate(pixels[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]
