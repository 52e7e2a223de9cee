"""A seeded synthetic multi-label segmentation set with a small discriminative part per object.

Every image is a cluttered, textured background with one or two objects and one or two
distractors. Each object has

* a **body**: a rotated ellipse with a striped texture whose hue and stripe angle are drawn
  from the whole range whatever the class (``shared_bodies``): bodies carry no class
  evidence, and background clutter and **distractors** (badge-less bodies of the same shape,
  size and texture, background in the mask) look the same.
* a **badge**: a small square inside the body (about 13% of the object) showing a
  class-specific 3x3 black-and-white code. Nothing else in the scene is black and white at
  that contrast, so the badge alone identifies the class.

A classifier can only learn the classes from the badges, while the ground-truth mask covers
the whole body: the situation WSSS is about. The generator renders a badge mask with every
scene (``badge_masks``), so how much of a map lies on the badge is measured, not assumed
(``loupe.demo.badge_statistic``). Masks are exact (``0`` background, ``c + 1`` for class
``c``), and the image-level labels are derived from the masks, so a label is present exactly
when its class has at least one visible pixel. The design, the statistic that chose it and
every parameter are documented in ``docs/synthetic-data.md``; no map method's mIoU was used
to choose them. The older design (class-dependent bodies, no distractors, smaller badges) is
``SyntheticConfig(shared_bodies=False, distractors=(0, 0), badge_size=0.12,
body_radius=(0.15, 0.27), objects=(1, 3))``.

Everything is drawn from one ``torch.Generator`` seeded by ``seed`` and rendered for all images
at once (tensors ``(N, H, W)`` per object slot), so a few hundred 96x96 images take well under
a second or two. Class-specific appearance (codes, hue and angle centres) does not depend on
``seed``: train and validation sets made with different seeds share their classes.

Example:
    >>> data = make_synthetic(8, size=64, seed=0)
    >>> sample = data[0]
    >>> sample.image.size, tuple(sample.labels.shape), tuple(sample.mask.shape)
    ((64, 64), (6,), (64, 64))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from loupe.data.base import Sample

__all__ = ["SyntheticConfig", "SyntheticDataset", "class_codes", "make_synthetic", "render_scenes"]

_CODE_SEED = 20240607  # fixed: class codes are the same for every data seed


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generator (all sizes are fractions of the image side).

    num_classes: object classes (mask labels ``1..num_classes``), at most 12.
    objects: (min, max) objects per image, drawn uniformly; classes may repeat.
    body_radius: (min, max) semi-axis of an object's elliptical body.
    badge_size: side of the square badge; its 3x3 code cells are ``badge_size / 3`` wide.
    hue_width, angle_width: width of a class's body hue / stripe-angle interval in units of
        the spacing between class centres (``1/C`` of the hue circle, ``pi/C`` of angles);
        values above 1 make neighbouring classes overlap, 0 makes the body unambiguous.
    shared_bodies: when True, every body draws its hue and stripe angle from the whole range
        whatever its class (``hue_width`` and ``angle_width`` are then unused): bodies carry
        no class evidence and only the badge tells classes apart.
    distractors: (min, max) badge-less bodies per image, drawn like object bodies (shape,
        size, texture from the whole range) and placed with them; background in the mask.
    clutter: (min, max) background shapes (rectangles and ellipses with textures drawn from
        the whole hue and angle range, i.e. body-like but of no class).
    min_separation: object centres are at least this times the sum of their larger
        semi-axes apart (0 allows any overlap; later objects occlude earlier ones).
    noise: standard deviation of per-pixel Gaussian noise on [0, 1] intensities.
    """

    num_classes: int = 5
    objects: tuple[int, int] = (1, 2)
    body_radius: tuple[float, float] = (0.22, 0.32)
    badge_size: float = 0.17
    hue_width: float = 2.0
    angle_width: float = 2.0
    shared_bodies: bool = True
    distractors: tuple[int, int] = (1, 2)
    clutter: tuple[int, int] = (4, 8)
    min_separation: float = 0.8
    noise: float = 0.03

    def check(self) -> None:
        """Raise a ValueError naming the first parameter out of range."""
        if not 1 <= self.num_classes <= 12:
            raise ValueError(f"num_classes must be in 1..12, got {self.num_classes}")
        if not 1 <= self.objects[0] <= self.objects[1]:
            raise ValueError(f"objects must be (min, max) with 1 <= min <= max, got {self.objects}")
        if not 0 < self.body_radius[0] <= self.body_radius[1] <= 0.5:
            raise ValueError(f"body_radius must satisfy 0 < min <= max <= 0.5, got "
                             f"{self.body_radius}")
        if not 0 < self.badge_size <= self.body_radius[0] * math.sqrt(2):
            raise ValueError(f"badge_size must be in (0, body_radius[0] * sqrt(2)] so the badge "
                             f"fits in the body, got {self.badge_size}")
        if not 0 <= self.clutter[0] <= self.clutter[1]:
            raise ValueError(f"clutter must be (min, max) with 0 <= min <= max, got {self.clutter}")
        if not 0 <= self.distractors[0] <= self.distractors[1]:
            raise ValueError(f"distractors must be (min, max) with 0 <= min <= max, got "
                             f"{self.distractors}")
        if self.hue_width < 0 or self.angle_width < 0 or self.noise < 0:
            raise ValueError("hue_width, angle_width and noise must be >= 0")


def class_codes(num_classes: int) -> torch.Tensor:
    """The badge codes ``(C, 3, 3)`` bool, True = white: distinct codes with 3 to 6 white
    cells and pairwise Hamming distance >= 3, chosen greedily in a fixed pseudo-random order
    (independent of any data seed)."""
    order = torch.randperm(512, generator=torch.Generator().manual_seed(_CODE_SEED))
    bits = (order[:, None] >> torch.arange(9)) & 1
    chosen: list[torch.Tensor] = []
    for code in bits:
        if not 3 <= int(code.sum()) <= 6:
            continue
        if all(int((code != other).sum()) >= 3 for other in chosen):
            chosen.append(code)
        if len(chosen) == num_classes:
            break
    return torch.stack(chosen).view(num_classes, 3, 3).bool()


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] (broadcastable tensors ``(...)``) to RGB ``(..., 3)`` in [0, 1]."""
    n = torch.tensor([5.0, 3.0, 1.0], device=h.device)
    k = (n + h[..., None] * 6) % 6
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return v[..., None] - v[..., None] * s[..., None] * ramp


@dataclass(frozen=True)
class Scenes:
    """Rendered scenes: ``images`` (N, 3, H, W) uint8, ``masks`` (N, H, W) uint8 class index,
    ``instances`` (N, H, W) int8 object slot or -1, ``object_classes`` (N, S) long class index
    ``0..C-1`` of each object slot or -1 when the slot is empty, ``badges`` (N, S, 4) float
    xyxy of each slot's badge square in pixels (meaningless for empty slots; parts may be
    hidden by later objects), ``badge_masks`` (N, H, W) bool the visible badge pixels (inside
    the object mask, occlusion applied), ``distractor_masks`` (N, H, W) bool the visible
    pixels of badge-less distractor bodies (background in ``masks``)."""

    images: torch.Tensor
    masks: torch.Tensor
    instances: torch.Tensor
    object_classes: torch.Tensor
    badges: torch.Tensor
    badge_masks: torch.Tensor
    distractor_masks: torch.Tensor


def _uniform(g: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=g) * (high - low) + low


def _counts(g: torch.Generator, n: int, bounds: tuple[int, int]) -> torch.Tensor:
    return torch.randint(bounds[0], bounds[1] + 1, (n,), generator=g)


def _stripes(
    x: torch.Tensor, y: torch.Tensor, angle: torch.Tensor, period: torch.Tensor,
    phase: torch.Tensor,
) -> torch.Tensor:
    """``sin`` stripes ``(N, H, W)`` across direction ``angle`` (N,) with ``period`` pixels."""
    a, p, f = angle[:, None, None], phase[:, None, None], period[:, None, None]
    return torch.sin(2 * math.pi * (x * a.cos() + y * a.sin()) / f + p)


def _ellipse(
    x: torch.Tensor, y: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, ra: torch.Tensor,
    rb: torch.Tensor, angle: torch.Tensor,
) -> torch.Tensor:
    """Inside-test ``(N, H, W)`` bool of rotated ellipses with per-image parameters (N,)."""
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    c, s = angle.cos()[:, None, None], angle.sin()[:, None, None]
    u, v = dx * c + dy * s, -dx * s + dy * c
    return (u / ra[:, None, None]) ** 2 + (v / rb[:, None, None]) ** 2 <= 1


def _textured(
    g: torch.Generator, x: torch.Tensor, y: torch.Tensor, hue: torch.Tensor, angle: torch.Tensor,
    side: int, amplitude: tuple[float, float],
) -> torch.Tensor:
    """Striped colour ``(N, 3, H, W)``: hue (N,), random saturation, value, period, phase."""
    n = hue.shape[0]
    sat, val = _uniform(g, (n,), 0.35, 0.8), _uniform(g, (n,), 0.45, 0.85)
    period = _uniform(g, (n,), 0.04, 0.08) * side
    phase = _uniform(g, (n,), 0.0, 2 * math.pi)
    amp = _uniform(g, (n,), *amplitude)
    shade = 1 + amp[:, None, None] * _stripes(x, y, angle, period, phase)
    value = (val[:, None, None] * shade).clamp(0, 1)
    rgb = hsv_to_rgb(hue[:, None, None] % 1.0, sat[:, None, None].expand_as(value), value)
    return rgb.permute(0, 3, 1, 2)


def _background(g: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Smooth colour fields ``(N, 3, H, W)``: a base colour plus low- and mid-frequency noise."""
    base = hsv_to_rgb(
        _uniform(g, (n,), 0, 1), _uniform(g, (n,), 0.15, 0.6), _uniform(g, (n,), 0.35, 0.75)
    )[:, :, None, None]
    low = F.interpolate(torch.rand((n, 3, 4, 4), generator=g) - 0.5, size=(h, w),
                        mode="bicubic", align_corners=False)
    mid = F.interpolate(torch.rand((n, 3, 12, 12), generator=g) - 0.5, size=(h, w),
                        mode="bilinear", align_corners=False)
    return base + 0.3 * low + 0.15 * mid


def _place_objects(
    g: torch.Generator, active: torch.Tensor, radius: torch.Tensor, separation: float,
    tries: int = 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres ``(N, S, 2)`` in [0.15, 0.85] (fractions) and ``present`` (N, S) of the slots
    ``active`` (N, S): each slot takes the first of ``tries`` candidates far enough from the
    earlier slots' objects, or is left empty. ``radius`` (N, S) is each larger semi-axis."""
    n, slots = active.shape
    candidates = _uniform(g, (n, slots, tries, 2), 0.15, 0.85)
    centres = torch.zeros(n, slots, 2)
    present = torch.zeros(n, slots, dtype=torch.bool)
    for j in range(slots):
        ok = torch.ones(n, tries, dtype=torch.bool)
        for i in range(j):
            dist = (candidates[:, j] - centres[:, i, None]).norm(dim=-1)
            needed = separation * (radius[:, j] + radius[:, i])[:, None]
            ok &= (dist >= needed) | ~present[:, i, None]
        first = ok.float().argmax(1)
        centres[:, j] = candidates[torch.arange(n), j, first]
        present[:, j] = ok.any(1) & active[:, j]
    return centres, present


def render_scenes(n: int, size: int | tuple[int, int], seed: int,
                  config: SyntheticConfig | None = None) -> Scenes:
    """Render ``n`` scenes of ``size`` (side or (H, W)) from ``seed``; see the module doc."""
    config = config or SyntheticConfig()
    config.check()
    h, w = (size, size) if isinstance(size, int) else size
    if n < 1 or h < 16 or w < 16:
        raise ValueError(f"need n >= 1 and images of at least 16x16, got n={n}, size={size}")
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    canvas = _paint_clutter(g, _background(g, n, h, w), x, y, config)
    c, slots = config.num_classes, config.objects[1]
    counts = _counts(g, n, config.objects)
    classes = torch.randint(0, c, (n, slots), generator=g)
    side = min(h, w)
    radii = _uniform(g, (n, slots, 2), *config.body_radius) * side
    active = torch.arange(slots) < counts[:, None]
    extra = config.distractors[1]
    if extra:  # distractor slots after the object slots (no draws when there are none)
        spare = torch.arange(extra) < _counts(g, n, config.distractors)[:, None]
        active = torch.cat([active, spare], 1)
        radii = torch.cat([radii, _uniform(g, (n, extra, 2), *config.body_radius) * side], 1)
    centres, present = _place_objects(g, active, radii.amax(-1) / side, config.min_separation)
    centres = centres * torch.tensor([w, h])
    distractors = torch.zeros(n, h, w, dtype=torch.bool)
    if extra:
        canvas, distractors = _paint_distractors(g, canvas, x, y, centres[:, slots:],
                                                 radii[:, slots:], present[:, slots:])
    scenes = _paint_objects(g, canvas, x, y, classes, centres[:, :slots], radii[:, :slots],
                            present[:, :slots], config)
    images = scenes.images + config.noise * torch.randn(scenes.images.shape, generator=g)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return Scenes(images, scenes.masks, scenes.instances, scenes.object_classes,
                  scenes.badges, scenes.badge_masks, distractors & (scenes.masks == 0))


def _paint_clutter(g: torch.Generator, canvas: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   config: SyntheticConfig) -> torch.Tensor:
    """``canvas`` ``(N, 3, H, W)`` with ``config.clutter`` textured rectangles and ellipses."""
    n, h, w = canvas.shape[0], *canvas.shape[-2:]
    side = min(h, w)
    clutter_counts = _counts(g, n, config.clutter)
    for k in range(config.clutter[1]):
        on = k < clutter_counts
        cx, cy = _uniform(g, (n,), 0, w), _uniform(g, (n,), 0, h)
        ra, rb = (_uniform(g, (n,), 0.05, 0.16) * side for _ in range(2))
        angle = _uniform(g, (n,), 0, math.pi)
        ellipse = _ellipse(x, y, cx, cy, ra, rb, angle)
        rect = ((x - cx[:, None, None]).abs() <= ra[:, None, None]) & (
            (y - cy[:, None, None]).abs() <= rb[:, None, None])
        is_rect = (torch.rand((n,), generator=g) < 0.5)[:, None, None]
        inside = torch.where(is_rect, rect, ellipse) & on[:, None, None]
        colour = _textured(g, x, y, _uniform(g, (n,), 0, 1), _uniform(g, (n,), 0, math.pi),
                           side, (0.0, 0.3))
        canvas = torch.where(inside[:, None], colour, canvas)
    return canvas


def _paint_distractors(g: torch.Generator, canvas: torch.Tensor, x: torch.Tensor,
                       y: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                       present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Badge-less bodies (centres ``(N, D, 2)`` pixels, semi-axes ``(N, D, 2)``, ``present``
    ``(N, D)``) with hue and stripe angle from the whole range, painted on ``canvas``;
    returns the canvas and the bodies' pixels ``(N, H, W)`` bool."""
    n, side = canvas.shape[0], min(canvas.shape[-2:])
    painted = torch.zeros(n, *canvas.shape[-2:], dtype=torch.bool)
    for j in range(centres.shape[1]):
        angle = _uniform(g, (n,), 0, math.pi)
        body = _ellipse(x, y, centres[:, j, 0], centres[:, j, 1], radii[:, j, 0],
                        radii[:, j, 1], angle) & present[:, j, None, None]
        colour = _textured(g, x, y, _uniform(g, (n,), 0, 1), _uniform(g, (n,), 0, math.pi),
                           side, (0.15, 0.3))
        canvas = torch.where(body[:, None], colour, canvas)
        painted |= body
    return canvas, painted


def _body_colour(g: torch.Generator, x: torch.Tensor, y: torch.Tensor, cls: torch.Tensor,
                 side: int, config: SyntheticConfig) -> torch.Tensor:
    """Striped body colour ``(N, 3, H, W)`` of objects of class ``cls`` (N,): hue and stripe
    angle around the class centres (see :class:`SyntheticConfig`), or from the whole range
    with ``shared_bodies``."""
    c = config.num_classes
    hue_jitter = torch.rand(cls.shape, generator=g)
    angle_jitter = torch.rand(cls.shape, generator=g)
    if config.shared_bodies:
        hue, stripe_angle = hue_jitter, angle_jitter * math.pi
    else:
        hue = (cls + 0.5) / c + (hue_jitter - 0.5) * config.hue_width / c
        stripe_angle = (cls + 0.5) * math.pi / c + (
            angle_jitter - 0.5) * config.angle_width * math.pi / c
    return _textured(g, x, y, hue, stripe_angle, side, (0.15, 0.3))


def _paint_objects(g: torch.Generator, canvas: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   classes: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                   present: torch.Tensor, config: SyntheticConfig) -> Scenes:
    """Objects (body + badge) slot by slot on ``canvas``; later slots occlude earlier ones.
    Returns noiseless float ``images`` in [0, 1] and the masks (see :class:`Scenes`)."""
    n, h, w = canvas.shape[0], *canvas.shape[-2:]
    slots, side = classes.shape[1], min(h, w)
    codes = class_codes(config.num_classes)
    masks = torch.zeros(n, h, w, dtype=torch.uint8)
    instances = torch.full((n, h, w), -1, dtype=torch.int8)
    badge_masks = torch.zeros(n, h, w, dtype=torch.bool)
    badge = config.badge_size * side
    badges = torch.zeros(n, slots, 4)
    for j in range(slots):
        cls, on = classes[:, j], present[:, j]
        cx, cy = centres[:, j, 0], centres[:, j, 1]
        ra, rb = radii[:, j, 0], radii[:, j, 1]
        angle = _uniform(g, (n,), 0, math.pi)
        body = _ellipse(x, y, cx, cy, ra, rb, angle) & on[:, None, None]
        colour = _body_colour(g, x, y, cls, side, config)
        # Badge: axis-aligned square inside the body (its half-diagonal plus the offset stays
        # within the smaller semi-axis), cells coloured by the class code.
        reach = (torch.minimum(ra, rb) - badge / math.sqrt(2)).clamp(min=0)
        bx = cx + (torch.rand((n,), generator=g) * 2 - 1) * reach / math.sqrt(2)
        by = cy + (torch.rand((n,), generator=g) * 2 - 1) * reach / math.sqrt(2)
        badges[:, j] = torch.stack([bx - badge / 2, by - badge / 2, bx + badge / 2,
                                    by + badge / 2], dim=1)
        u = (x - bx[:, None, None] + badge / 2) / badge
        v = (y - by[:, None, None] + badge / 2) / badge
        in_badge = (u >= 0) & (u < 1) & (v >= 0) & (v < 1) & on[:, None, None]
        white = codes[cls[:, None, None], (v.clamp(0, 0.999) * 3).long(),
                      (u.clamp(0, 0.999) * 3).long()]
        code_colour = torch.where(white, 0.95, 0.05)[:, None].expand(-1, 3, -1, -1)
        canvas = torch.where(body[:, None], colour, canvas)
        canvas = torch.where(in_badge[:, None], code_colour, canvas)
        painted = body | in_badge
        masks[painted] = (cls[:, None, None] + 1).expand(-1, h, w)[painted].to(torch.uint8)
        instances[painted] = j
        badge_masks[painted] = in_badge[painted]
    object_classes = torch.where(present, classes, -1)
    return Scenes(canvas, masks, instances, object_classes, badges, badge_masks,
                  torch.zeros_like(badge_masks))


class SyntheticDataset(Dataset):
    """Map-style dataset over rendered scenes, yielding :class:`loupe.data.base.Sample`.

    Follows the conventions of :mod:`loupe.data.base` for segmentation sets: ``num_classes``
    is ``C + 1`` and index 0 is the background, which is never an image-level label.

    Attributes:
        images: ``(N, 3, H, W)`` uint8; masks: ``(N, H, W)`` long (0 = background, ``c`` =
        class ``c``); labels: ``(N, C + 1)`` float multi-hot with ``labels[:, 0] == 0``;
        class_names: ``C + 1`` names, index 0 = ``"background"``; ids: ``N`` strings;
        badge_masks: ``(N, H, W)`` bool, the visible badge pixels (a part of the object in
        ``masks``); distractor_masks: ``(N, H, W)`` bool, visible badge-less bodies
        (background in ``masks``); instances, object_classes, badges: see :class:`Scenes`.
    """

    def __init__(self, scenes: Scenes, seed: int, object_classes: int,
                 transform: Callable[[Image.Image], object] | None = None) -> None:
        self.images = scenes.images
        self.masks = scenes.masks.long()
        self.instances = scenes.instances
        self.object_classes = scenes.object_classes
        self.badges = scenes.badges
        self.badge_masks = scenes.badge_masks
        self.distractor_masks = scenes.distractor_masks
        present = F.one_hot(self.masks.flatten(1), object_classes + 1).amax(1).float()
        present[:, 0] = 0.0
        self.labels = present
        self.class_names = ("background", *(f"class{k}" for k in range(1, object_classes + 1)))
        self.ids = [f"synthetic-{seed}-{i:05d}" for i in range(len(self.images))]
        self.transform = transform

    @property
    def num_classes(self) -> int:
        """Length of ``labels``: the object classes plus the background."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def mask(self, index: int) -> torch.Tensor:
        """The ground-truth mask ``(H, W)`` long of item ``index``."""
        return self.masks[index]

    def badge_mask(self, index: int) -> torch.Tensor:
        """The visible badge pixels ``(H, W)`` bool of item ``index``."""
        return self.badge_masks[index]

    def boxes(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes ``(M, 4)`` float xyxy (pixel edges) of the visible part of each object and
        their class indices ``(M,)`` long (as in the masks)."""
        inst = self.instances[index]
        boxes, labels = [], []
        for j, cls in enumerate(self.object_classes[index].tolist()):
            ys, xs = torch.nonzero(inst == j, as_tuple=True)
            if cls < 0 or ys.numel() == 0:
                continue
            boxes.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float())
            labels.append(cls + 1)
        if not boxes:
            return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
        return torch.stack(boxes), torch.tensor(labels, dtype=torch.long)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} synthetic images")
        index = index % len(self)
        image = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())
        boxes, box_labels = self.boxes(index)
        return Sample(
            id=self.ids[index],
            image=self.transform(image) if self.transform else image,
            labels=self.labels[index],
            mask=self.masks[index],
            boxes=boxes,
            box_labels=box_labels,
        )


def make_synthetic(
    n: int, size: int | tuple[int, int] = 96, seed: int = 0,
    config: SyntheticConfig | None = None,
    transform: Callable[[Image.Image], object] | None = None,
) -> SyntheticDataset:
    """``n`` synthetic scenes of ``size`` pixels, deterministic for ``seed`` (see module doc).

    Args:
        n: number of images.
        size: side of square images, or ``(H, W)``; at least 16.
        seed: the only source of randomness; use different seeds for train and val.
        config: generator parameters (:class:`SyntheticConfig`), defaults documented there.
        transform: applied to each sample's PIL image.

    Returns:
        A :class:`SyntheticDataset` (labels ``(C + 1,)`` with 0 = background, never set;
        masks ``(H, W)`` long with 0 = background and ``c`` = class ``c``).
    """
    config = config or SyntheticConfig()
    return SyntheticDataset(render_scenes(n, size, seed, config), seed, config.num_classes,
                            transform)
