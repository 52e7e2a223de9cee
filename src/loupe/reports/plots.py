"""PNG figures: mIoU against the background threshold, and overlay grids.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot, no global state,
no display needed) and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
    _save(figure, path)


def plot_overlay_grid(
    path: str | os.PathLike[str],
    images: torch.Tensor,
    columns: Mapping[str, torch.Tensor],
    *,
    alpha: float = 0.5,
    max_rows: int = 16,
) -> None:
    """A grid: one row per image, the image then one panel per column (ground truth, each
    method...).

    Args:
        images: ``(B, 3, H, W)`` RGB, float in [0, 1] or uint8.
        columns: name -> ``(B, H, W)``: integer masks are drawn in VOC colours over the
            image (255 in its light ignore colour); float maps are min-max normalised and
            drawn with the ``jet`` colour map over the image.
        alpha: weight of the colours over the image.
        max_rows: at most this many images are drawn.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) RGB, got {tuple(images.shape)}")
    rgb = _rgb_float(images)[:max_rows]
    rows, _, height, width = rgb.shape
    for name, panel in columns.items():
        if panel.dim() != 3 or panel.shape[0] < rows or panel.shape[-2:] != (height, width):
            raise ValueError(
                f"column {name!r} must be (B, H, W) = ({images.shape[0]}, {height}, {width}), "
                f"got {tuple(panel.shape)}"
            )
    panels = [("image", rgb)] + [
        (name, _overlay(rgb, panel[:rows], alpha)) for name, panel in columns.items()
    ]
    scale = 2.0
    figure = Figure(figsize=(scale * len(panels), scale * rows * height / width + 0.4), dpi=100)
    grid = figure.subplots(rows, len(panels), squeeze=False)
    for col, (name, pictures) in enumerate(panels):
        for row in range(rows):
            axes = grid[row][col]
            axes.imshow(pictures[row].permute(1, 2, 0).numpy(), interpolation="nearest")
            axes.set_axis_off()
            if row == 0:
                axes.set_title(name, fontsize="small")
    figure.subplots_adjust(wspace=0.03, hspace=0.03)
    _save(figure, path)


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
