"""PNG figures: mIoU against the background threshold, and overlay grids.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot, no global state,
no display needed) and written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from loupe.io import atomic_path
from loupe.masks.normalize import normalize
from loupe.masks.palette import colorize_mask

Curve = tuple[Sequence[float], Sequence[float]]
Band = tuple[Sequence[float], Sequence[float], Sequence[float]]


LINE_STYLES = ("-", "--", ":", "-.")


def _save(figure: Figure, path: str | os.PathLike[str]) -> None:
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=figure.dpi, bbox_inches="tight")


def plot_miou_vs_threshold(
    path: str | os.PathLike[str],
    curves: Mapping[str, Curve],
    intervals: Mapping[str, Band] | None = None,
    *,
    title: str = "mIoU against the background threshold",
) -> None:
    """One line per method: mIoU (in %) against the threshold, best point marked, written
    to ``path`` (:func:`miou_figure`)."""
    _save(miou_figure(curves, intervals, title=title), path)


def miou_png(curves: Mapping[str, Curve], *,
             title: str = "mIoU against the background threshold") -> bytes:
    """The PNG bytes of :func:`miou_figure` (for pages that embed it; no file written)."""
    figure = miou_figure(curves, title=title)
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, bbox_inches="tight")
    return buffer.getvalue()


def miou_figure(
    curves: Mapping[str, Curve],
    intervals: Mapping[str, Band] | None = None,
    *,
    title: str = "mIoU against the background threshold",
) -> Figure:
    """One line per method: mIoU (in %) against the threshold, best point marked.

    Args:
        curves: method -> (thresholds, mIoU as fractions).
        intervals: optional method -> (thresholds, low, high), drawn as shaded bands (e.g.
            bootstrap intervals).
    """
    if not curves:
        raise ValueError("plot_miou_vs_threshold needs at least one curve")
    figure = Figure(figsize=(6.4, 4.2), dpi=100)
    axes = figure.add_subplot()
    for i, (name, (thresholds, mious)) in enumerate(curves.items()):
        x, y = _floats(thresholds), [100 * v for v in _floats(mious)]
        if len(x) != len(y) or not x:
            raise ValueError(f"curve {name!r}: {len(x)} thresholds for {len(y)} mIoU values")
        style = LINE_STYLES[i // 10 % len(LINE_STYLES)]  # the colour cycle has 10 colours
        (line,) = axes.plot(x, y, marker="o", markersize=3, label=name, linestyle=style)
        best = max(range(len(y)), key=y.__getitem__)
        axes.plot([x[best]], [y[best]], marker="*", markersize=11, color=line.get_color())
        if intervals and name in intervals:
            bx, low, high = (_floats(v) for v in intervals[name])
            axes.fill_between(bx, [100 * v for v in low], [100 * v for v in high],
                              color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("background threshold")
    axes.set_ylabel("mIoU (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def plot_overlay_grid(
    path: str | os.PathLike[str],
    images: torch.Tensor | Sequence[torch.Tensor],
    columns: Mapping[str, torch.Tensor | Sequence[torch.Tensor]],
    *,
    alpha: float = 0.5,
    max_rows: int = 16,
    class_names: Sequence[str] | None = None,
) -> None:
    """A grid: one row per image, the image then one panel per column (ground truth, each
    method...), every panel with the image's own aspect ratio.

    Args:
        images: ``(B, 3, H, W)`` RGB, float in [0, 1] or uint8; or a sequence of ``(3, H_i,
            W_i)`` images of different sizes.
        columns: name -> ``(B, H, W)`` (or a sequence of ``(H_i, W_i)``): integer masks are
            drawn in VOC colours over the image (255 in its light ignore colour); float maps
            are min-max normalised and drawn with the ``jet`` colour map over the image.
        alpha: weight of the colours over the image.
        max_rows: at most this many images are drawn.
        class_names: names of the mask labels; with them a legend below the grid shows the
            colour of every label in the integer columns.
    """
    rows_rgb = _image_rows(images)[:max_rows]
    panels: list[tuple[str, list[torch.Tensor]]] = [("image", rows_rgb)]
    labels: set[int] = set()
    for name, column in columns.items():
        masks = _column_rows(name, column, rows_rgb, images)
        panels.append((name, [_overlay(rgb[None], mask[None], alpha)[0]
                              for rgb, mask in zip(rows_rgb, masks, strict=True)]))
        labels.update(int(v) for m in masks if not m.is_floating_point() for v in m.unique())
    aspect = sum(r.shape[1] / r.shape[2] for r in rows_rgb) / len(rows_rgb)
    scale = 2.0
    legend = class_names is not None and bool(labels)
    figure = Figure(figsize=(scale * len(panels), scale * len(rows_rgb) * aspect + 0.4
                             + 0.3 * legend), dpi=100, layout="compressed")
    figure.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    grid = figure.subplots(len(rows_rgb), len(panels), squeeze=False)
    for col, (name, pictures) in enumerate(panels):
        for row, picture in enumerate(pictures):
            axes = grid[row][col]
            axes.imshow(picture.permute(1, 2, 0).numpy(), interpolation="nearest")
            axes.set_axis_off()
            if row == 0:
                axes.set_title(name, fontsize="small")
    if legend:
        _class_legend(figure, sorted(labels), class_names)
    _save(figure, path)


def _image_rows(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each image as ``(3, H, W)`` float in [0, 1] on the CPU."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W) RGB, got {tuple(images.shape)}")
        return list(_rgb_float(images))
    if not images or any(i.dim() != 3 or i.shape[0] != 3 for i in images):
        raise ValueError("images must be (B, 3, H, W) RGB or a non-empty sequence of (3, H, W)")
    return [_rgb_float(i[None])[0] for i in images]


def _column_rows(name: str, column: torch.Tensor | Sequence[torch.Tensor],
                 rows_rgb: Sequence[torch.Tensor], images: object) -> list[torch.Tensor]:
    """The column's panel of each drawn image, checked against the image's size."""
    panels = list(column)
    if len(panels) < len(rows_rgb) or any(
            p.dim() != 2 or p.shape != rgb.shape[1:]
            for p, rgb in zip(panels, rows_rgb, strict=False)):
        expected = (f"(B, H, W) = ({images.shape[0]}, {images.shape[2]}, {images.shape[3]})"
                    if isinstance(images, torch.Tensor) else "one (H, W) per image, its size")
        shape = tuple(column.shape) if isinstance(column, torch.Tensor) else len(panels)
        raise ValueError(f"column {name!r} must be {expected}, got {shape}")
    return [p.detach().cpu() for p in panels[:len(rows_rgb)]]


def _class_legend(figure: Figure, labels: Sequence[int], names: Sequence[str]) -> None:
    """Colour patches of ``labels`` (VOC palette) with their names, below the grid."""
    colours = colorize_mask(torch.tensor(list(labels))).float() / 255
    handles = [Patch(facecolor=tuple(colours[i].tolist()), edgecolor="#555",
                     label=names[label] if label < len(names) else
                     ("ignore" if label == 255 else f"class {label}"))
               for i, label in enumerate(labels)]
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                  fontsize="small", frameon=False)


def _overlay(rgb: torch.Tensor, panel: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(B, 3, H, W)`` float image blended with a mask's or a map's colours."""
    panel = panel.detach().cpu()
    if panel.is_floating_point():
        scaled = normalize(panel.float())
        colours = torch.from_numpy(colormaps["jet"](scaled.numpy())[..., :3]).float()
    else:
        colours = colorize_mask(panel).float() / 255
    colours = colours.permute(0, 3, 1, 2)
    return ((1 - alpha) * rgb + alpha * colours).clamp(0, 1)


def _rgb_float(images: torch.Tensor) -> torch.Tensor:
    images = images.detach().cpu()
    if images.is_floating_point():
        return images.float().clamp(0, 1)
    return images.float() / 255


def _floats(values: Sequence[float] | torch.Tensor) -> list[float]:
    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.flatten().tolist()]
    return [float(v) for v in values]
