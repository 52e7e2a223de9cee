"""Colour overlays of maps on images, as PIL images (matplotlib colormaps, no cv2).

The maths stays in torch on the map's device: a map is min-max normalised, looked up in a
256-entry colormap table and alpha-blended with the image; PIL only draws the panels and titles.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from loupe.masks.normalize import normalize


def colormap_table(name: str = "jet", device: torch.device | str = "cpu") -> torch.Tensor:
    """The matplotlib colormap ``name`` sampled at 256 levels, ``(256, 3)`` float32 in [0, 1]."""
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; see matplotlib.colormaps") from None
    levels = torch.linspace(0, 1, 256).tolist()
    return torch.tensor([cmap(v)[:3] for v in levels], dtype=torch.float32, device=device)


def colorize(maps: torch.Tensor, colormap: str = "jet") -> torch.Tensor:
    """``(..., H, W)`` maps -> ``(..., 3, H, W)`` float32 colours in [0, 1]; each map is min-max
    normalised first (a constant map gets the colormap's lowest colour)."""
    table = colormap_table(colormap, maps.device)
    index = (normalize(maps.float()) * 255).round().long()
    return table[index].movedim(-1, -3)


def blend(image: torch.Tensor, maps: torch.Tensor, alpha: float = 0.5, colormap: str = "jet"
          ) -> torch.Tensor:
    """Overlays of ``maps`` ``(K, h, w)`` on ``image`` ``(3, H, W)`` uint8, as ``(K, 3, H, W)``
    uint8: ``(1 - alpha) * image + alpha * colour``. Maps are resized bilinearly to ``(H, W)``."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    if maps.dim() != 3:
        raise ValueError(f"maps must be (K, h, w), got {tuple(maps.shape)}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    maps = maps.to(image.device).float()
    if maps.shape[-2:] != image.shape[-2:]:
        maps = F.interpolate(maps[None], size=image.shape[-2:], mode="bilinear",
                             align_corners=False)[0]
    colours = colorize(maps, colormap) * 255
    mixed = (1 - alpha) * image.float()[None] + alpha * colours
    return mixed.round().clamp(0, 255).to(torch.uint8)


def to_pil(image: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` uint8 tensor -> PIL RGB image."""
    return Image.fromarray(image.detach().cpu().permute(1, 2, 0).contiguous().numpy(), "RGB")


def overlay_panels(
    image: torch.Tensor,
    maps: torch.Tensor,
    titles: Sequence[str],
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
    show_input: bool = True,
    min_panel: int = 192,
) -> Image.Image:
    """One PIL image: the input (if ``show_input``) then one overlay panel per map, side by
    side, each under its title.

    image: ``(3, H, W)`` uint8 (the crop the model saw). maps: ``(K, h, w)``. titles: ``K``
    strings (the input panel is titled "input"). Panels smaller than ``min_panel`` pixels are
    enlarged by an integer factor (nearest neighbour) so titles stay legible.
    """
    if len(titles) != maps.shape[0]:
        raise ValueError(f"{len(titles)} titles for {maps.shape[0]} maps")
    panels = [to_pil(p) for p in blend(image, maps, alpha, colormap)]
    names = list(titles)
    if show_input:
        panels.insert(0, to_pil(image))
        names.insert(0, "input")
    width, height = panels[0].size
    factor = max(1, -(-min_panel // max(width, height)))
    width, height = width * factor, height * factor
    font = _font(max(10, width // 16))
    strip = int(font.size * 1.6) if hasattr(font, "size") else 16
    sheet = Image.new("RGB", (width * len(panels), height + strip), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (panel, name) in enumerate(zip(panels, names, strict=True)):
        sheet.paste(panel.resize((width, height), Image.Resampling.NEAREST), (i * width, strip))
        text = _fit(draw, name, font, width - 4)
        draw.text((i * width + width / 2, strip / 2), text, fill="black", font=font, anchor="mm")
    return sheet


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    """``text`` shortened with an ellipsis until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def explanation_figure(
    image: torch.Tensor,
    map_: torch.Tensor,
    title: str,
    subtitle: str,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
    box: Sequence[float] | None = None,
) -> Image.Image:
    """One explanation as a PIL image: under a two-line heading (``title``, then
    ``subtitle``: say the method and the normalisation there), the picture, the map blended
    on it, and a colour bar labelled with the map's raw minimum and maximum (the colours are
    its min-max normalisation, :func:`colorize`).

    image: ``(3, H, W)`` uint8, drawn at its size (the whole image at a readable size, see
    :func:`loupe.explaining.images.display_image`). map_: ``(h, w)`` raw, resized to the
    picture bilinearly. box: ``(x1, y1, x2, y2)`` in the picture's pixels, outlined on both
    panels (a detection)."""
    if map_.dim() != 2:
        raise ValueError(f"map_ must be (h, w), got {tuple(map_.shape)}")
    picture = to_pil(image)
    overlay = to_pil(blend(image, map_[None], alpha, colormap)[0])
    if box is not None:
        for panel in (picture, overlay):
            ImageDraw.Draw(panel).rectangle([float(v) for v in box], outline="white", width=2)
    width, height = picture.size
    font = _font(max(12, min(width, 640) // 28))
    small = _font(max(10, min(width, 640) // 36))
    bar = _colour_bar(map_, height, colormap, small)
    line = int(getattr(font, "size", 12) * 1.4)
    top = line + int(getattr(small, "size", 10) * 1.4) + 6
    sheet = Image.new("RGB", (2 * width + bar.width + 12, height + top), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 3), _fit(draw, title, font, sheet.width - 12), fill="black", font=font)
    draw.text((6, 3 + line), _fit(draw, subtitle, small, sheet.width - 12), fill="dimgray",
              font=small)
    sheet.paste(picture, (0, top))
    sheet.paste(overlay, (width + 4, top))
    sheet.paste(bar, (2 * width + 8, top))
    return sheet


def _colour_bar(map_: torch.Tensor, height: int, colormap: str, font: object) -> Image.Image:
    """A vertical colour bar (highest colour at the top) with the raw maximum and minimum of
    ``map_`` written beside its ends."""
    table = colormap_table(colormap)
    levels = torch.linspace(1, 0, height)
    index = (levels * 255).round().long()
    colours = (table[index] * 255).round().to(torch.uint8)  # (height, 3)
    thickness = max(12, height // 24)
    strip = colours[:, None, :].expand(height, thickness, 3).contiguous()
    low, high = float(map_.min()), float(map_.max())
    labels = (f"{high:.3g}", f"{low:.3g}")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = int(max(probe.textlength(t, font=font) for t in labels)) + 6
    bar = Image.new("RGB", (thickness + text_width, height), "white")
    bar.paste(Image.fromarray(strip.numpy(), "RGB"), (0, 0))
    draw = ImageDraw.Draw(bar)
    draw.text((thickness + 4, 0), labels[0], fill="black", font=font, anchor="la")
    draw.text((thickness + 4, height), labels[1], fill="black", font=font, anchor="ld")
    return bar
