"""Report writers: Markdown tables, PNG plots, map overlays and a side-by-side HTML page."""

from loupe.reports.html import (
    embedded_figure,
    markdown_to_html,
    write_html_page,
    write_html_report,
)
from loupe.reports.markdown import markdown_table, write_report_md
from loupe.reports.plots import plot_miou_vs_threshold, plot_overlay_grid

__all__ = [
    "embedded_figure",
    "markdown_table",
    "markdown_to_html",
    "plot_miou_vs_threshold",
    "plot_overlay_grid",
    "write_html_page",
    "write_html_report",
    "write_report_md",
]
