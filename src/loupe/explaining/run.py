"""``loupe explain`` as a library: :class:`ExplainRun` checks everything it can before the model
runs (images, the output folder, the weights, the targets, the settings of the folder's earlier
runs), then :meth:`ExplainRun.results` explains the images batch by batch, writing each
image's files as soon as its batch is done and yielding one :class:`ImageResult` per image.

An image that cannot be explained (damaged, or smaller than the map of the target layer) is
skipped with its reason and the run goes on; a model that gives NaN or Inf (outputs or maps)
stops the run with an error naming the model and weights, since every map would be wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from loupe.api import explain
from loupe.distributed import resolve_device
from loupe.explaining import images as im
from loupe.explaining.outputs import (
    check_writable,
    figure_subtitle,
    image_stems,
    target_title,
    write_explanation,
)
from loupe.explaining.record import ExplainRecord, output_name
from loupe.explaining.settings import ExplainConfig, load_model, run_settings
from loupe.explaining.targets import (
    Target,
    check_range,
    class_targets,
    detection_targets,
    nonfinite_output,
    parse_targets,
    segmentation_targets,
)
from loupe.layers import LayerError, find_module, find_target_layer
from loupe.models.dense import CLASSIFICATION, DETECTION, SEGMENTATION
from loupe.registry import get_method
from loupe.targets import output_tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageResult:
    """What one image gave: ``titles`` of its explanations (``"dog (3) 0.412"``), the
    ``outputs`` written (names without suffix), or why it was ``skipped``."""

    path: Path
    titles: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class _Item:
    path: Path
    stem: str
    image: Image.Image
    size: tuple[int, int]  # model input (h, w)


class ExplainRun:
    """A prepared ``loupe explain`` run (see the module docstring); raises a ValueError naming
    the option or file for anything wrong before the model runs."""

    def __init__(self, config: ExplainConfig) -> None:
        config.check()
        self.config = config
        found = im.collect_images(config.inputs, recursive=config.recursive)
        self.images, self.damaged = found.paths, found.damaged
        self.stems = image_stems(self.images)
        check_writable(config.out)
        self.classifier = load_model(config)
        self.task = self.classifier.task
        self.names = self.classifier.class_names
        self.wanted = parse_targets(config.targets, self.names, self.task) if config.targets \
            else None
        check_range(self.wanted or [], self.classifier.num_outputs, config.topk)
        self.uses_layer = get_method(config.method).uses_layer
        if config.target_layer is not None:
            find_module(self.classifier.model, config.target_layer)
        settings, method_settings = run_settings(config, self.classifier)
        self.record = ExplainRecord(config.out, settings, config.label, method_settings)
        self.device = resolve_device(config.device)
        self.model = self.classifier.model.to(self.device)
        self.layer = config.target_layer

    @property
    def count(self) -> int:
        """Images this run looks at, damaged ones included."""
        return len(self.images) + len(self.damaged)

    def results(self) -> Iterator[ImageResult]:
        """One :class:`ImageResult` per image, in input order (damaged folder members first),
        each yielded after its files are written; the record is saved on the way and when the
        run ends or is interrupted."""
        try:
            for path, reason in self.damaged:
                yield ImageResult(path, skipped=f"{path}: {reason}")
            yield from self._explained()
        finally:
            self.record.save(force=True)

    def _explained(self) -> Iterator[ImageResult]:
        """Chunks of ``batch_size`` consecutive images, batched by model input size (one image
        at a time for segmentation and detection models, whose targets are per image)."""
        size = 1 if self.task != CLASSIFICATION else self.config.batch_size
        for start in range(0, len(self.images), size):
            items: list[_Item] = []
            for path, stem in zip(self.images[start:start + size],
                                  self.stems[start:start + size], strict=True):
                try:
                    items.append(self._read(path, stem))
                except im.ImageSkipped as error:
                    logger.warning("skipping %s", error)
                    self.record.add_image(stem, {"path": str(path), "skipped": str(error)})
                    yield ImageResult(path, skipped=str(error))
            groups: dict[tuple[int, int], list[_Item]] = {}
            for item in items:
                groups.setdefault(item.size, []).append(item)
            for group in groups.values():
                yield from self._explain_group(group)

    def _read(self, path: Path, stem: str) -> _Item:
        c = self.config
        image = im.read_image(path)
        height, width = image.height, image.width
        prep = self.classifier.preprocessing
        size = im.input_size(height, width, c.view, prep, c.max_side,
                             multiple=32 if self.task == DETECTION else 1)
        factor = im.upscale_factor(height, width, c.view, prep, size)
        if factor > im.UPSCALE_WARNING:
            logger.warning("%s: %dx%d pixels, enlarged %.3gx to the model's input; its maps "
                           "cannot show detail", path, width, height, factor)
        if c.view == "whole" and im.capped(height, width, prep, c.max_side):
            logger.warning("%s: %dx%d pixels explained at %dx%d (--max-side %d)", path, width,
                           height, size[1], size[0], c.max_side)
        return _Item(path, stem, image, size)

    def _forward(self, x: torch.Tensor, group: list[_Item]) -> object:
        try:
            with torch.no_grad():
                output = self.model(x)
        except (RuntimeError, AssertionError) as error:
            if self.config.view != "whole":
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ValueError(f"--model {self.config.model} fails on a {x.shape[-2]}x"
                             f"{x.shape[-1]} input ({first}); models that need a fixed input "
                             "size need --view squash or --view crop") from error
        if nonfinite_output(output):
            raise ValueError(self._nonfinite("outputs", group))
        return output

    def _nonfinite(self, what: str, group: list[_Item]) -> str:
        c = self.config
        files = ", ".join(str(item.path) for item in group)
        return (f"--model {c.model} with --weights {c.weights} gives NaN or Inf {what} for "
                f"{files}; these weights (or this method under --amp) cannot be explained")

    def _targets(self, output: object, group: list[_Item]) -> list[list[Target]]:
        c = self.config
        topk = c.topk or 1
        if self.task == SEGMENTATION:
            return [segmentation_targets(output, self.wanted, topk, c.scores, self.names)]
        if self.task == DETECTION:
            return [detection_targets(output, self.wanted, topk, str(group[0].path))]
        logits = _logits(output, c.model)
        return class_targets(logits, self.wanted, topk, c.scores)

    def _resolve_layer(self) -> None:
        """The default target layer, found once on a reference input (a square of the whole
        view's shorter side, or of the crop): the same for every image, whatever its
        companions in the run."""
        if self.layer is not None or not self.uses_layer:
            return
        if self.task == DETECTION:
            self.layer = _detector_layer(self.model, self.config.model)
            return
        prep = self.classifier.preprocessing
        side = prep.resize if self.config.view == "whole" else prep.size
        reference = torch.zeros(1, 3, side, side, device=self.device)
        try:
            self.layer = find_target_layer(self.model, reference)
        except LayerError as error:
            raise ValueError(str(error).replace("target_layer=", "--target-layer")) from error

    def _maps(self, x: torch.Tensor, targets: list[list[Target]]) -> torch.Tensor:
        c = self.config
        if self.task == CLASSIFICATION:
            wanted: object = torch.tensor([[t.cls for t in row] for row in targets],
                                          device=x.device)
        else:
            wanted = [t.function for t in targets[0]]
        return explain(self.model, x, wanted, method=c.method, target_layer=self.layer,
                       upsample=False, autocast=c.amp, **c.options)

    def _explain_group(self, group: list[_Item]) -> Iterator[ImageResult]:
        c, prep = self.config, self.classifier.preprocessing
        views = torch.stack([im.model_view(item.image, c.view, prep, item.size) for item in group])
        x = prep.normalize(views.to(self.device))
        output = self._forward(x, group)
        targets = self._targets(output, group)
        if not any(targets):  # a detector that found nothing
            for item in group:
                self._record_image(item, [], skipped=None)
                yield ImageResult(item.path)
            return
        self._resolve_layer()
        maps = self._maps(x, targets)
        if not bool(torch.isfinite(maps).all()):
            raise ValueError(self._nonfinite(f"{c.method} maps", group))
        for i, item in enumerate(group):
            yield self._write_image(item, maps[i], targets[i], x.shape[-2:])

    def _write_image(self, item: _Item, maps: torch.Tensor, targets: list[Target],
                     input_hw: torch.Size) -> ImageResult:
        c = self.config
        small = self._too_small(item, maps.shape[-2:])
        if small:
            logger.warning("skipping %s", small)
            self._record_image(item, [], skipped=small)
            return ImageResult(item.path, skipped=small)
        display = im.display_image(item.image, c.view, self.classifier.preprocessing)
        subtitle = figure_subtitle(c.label, self.layer)
        titles, names = [], []
        full = F.interpolate(maps[None].float(), size=tuple(input_hw), mode="bilinear",
                             align_corners=False)[0]
        for k, target in enumerate(targets):
            name = output_name(item.stem, c.label, target.cls, target.box_index)
            title = target_title(target, self.names)
            write_explanation(c.out / name, full[k], target, display, title, subtitle,
                              alpha=c.alpha, colormap=c.colormap)
            self.record.add_output(name, self._output_entry(item, target, full[k], maps.shape))
            titles.append(title)
            names.append(name)
        self._record_image(item, names, skipped=None)
        self.record.save()  # the first image's record, then every few seconds
        return ImageResult(item.path, titles, names)

    def _too_small(self, item: _Item, map_hw: torch.Size) -> str | None:
        """Why a layer map is finer than the image it explains (None when it is not)."""
        if not self.uses_layer:
            return None
        region = im.mapped_region(item.image.height, item.image.width, self.config.view,
                                  self.classifier.preprocessing)
        if region[0] >= map_hw[0] and region[1] >= map_hw[1]:
            return None
        return (f"{item.path}: {item.image.width}x{item.image.height} pixels is smaller than "
                f"the {map_hw[1]}x{map_hw[0]} map of --target-layer {self.layer}; its "
                f"{self.config.method} map would be made up (explain a larger image)")

    def _output_entry(self, item: _Item, target: Target, map_: torch.Tensor,
                      map_shape: torch.Size) -> dict[str, object]:
        name = self.names[target.cls] if self.names and target.cls < len(self.names) else None
        return {
            "image": item.stem, "method": self.config.label, "target_layer": self.layer,
            "class": target.cls, "name": name, "score": target.score,
            "box_index": target.box_index, "box": target.box,
            "box_image": _image_box(target.box, item), "region": target.region,
            "map_size": list(map_shape[-2:]), "raw_range": [float(map_.min()), float(map_.max())],
        }

    def _record_image(self, item: _Item, outputs: list[str], skipped: str | None) -> None:
        self.record.add_image(item.stem, {
            "path": str(item.path), "size": [item.image.height, item.image.width],
            "input_size": list(item.size), "outputs": outputs, "skipped": skipped,
        })


def _image_box(box: tuple[float, ...] | None, item: _Item) -> list[float] | None:
    """A box in model-input pixels in the original image's pixels."""
    if box is None:
        return None
    sy, sx = item.image.height / item.size[0], item.image.width / item.size[1]
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def _logits(output: object, model: str) -> torch.Tensor:
    with suppress(ValueError):
        logits = output_tensor(output)
        if logits.dim() == 2:
            return logits
    raise ValueError(f"--model {model} does not return class logits (B, classes)")


def _detector_layer(model: torch.nn.Module, name: str) -> str:
    """The last stage of a torchvision detector's backbone body (``backbone.body.layer4`` of
    the ResNet-FPN detectors), where its maps are read by default."""
    body = getattr(getattr(model, "backbone", None), "body", None)
    children = [n for n, _ in body.named_children()] if body is not None else []
    if not children:
        raise ValueError(f"--model {name} is a detection model without backbone.body: name "
                         "the layer with --target-layer")
    return f"backbone.body.{children[-1]}"
