"""Report writers: results JSON, Markdown tables, PNG plots and a side-by-side HTML page."""

from loupe.reports.html import markdown_to_html, write_html_report
from loupe.reports.markdown import markdown_table, to_jsonable, write_report_md, write_results_json
from loupe.reports.plots import plot_miou_vs_threshold, plot_overlay_grid

__all__ = [
    "markdown_table",
    "markdown_to_html",
    "plot_miou_vs_threshold",
    "plot_overlay_grid",
    "to_jsonable",
    "write_html_report",
    "write_report_md",
    "write_results_json",
]
