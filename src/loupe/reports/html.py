"""One self-contained HTML page of several runs.

A run is a folder as loupe writes it: a ``report.md`` (from
:func:`loupe.reports.markdown.write_report_md`) and PNG figures (plots, overlay grids), and for
a ``loupe evaluate`` run its ``results.json``. Evaluation runs are merged at the top of the page
(:mod:`loupe.reports.runs_page`: one table of every run's methods, one shared mIoU-threshold
plot) and each gets a section below (per-class tables folded); other runs become a section
with their ``report.md`` and figures. Images are embedded (base64), so the page can be moved
or mailed alone.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from loupe.io import atomic_path, read_json
from loupe.reports import runs_page

_STYLE = """
body { font-family: sans-serif; margin: 1em 1.5em; }
h1 { font-size: 1.3em; margin: 0 0 0.4em 0; }
h2 { font-size: 1.1em; margin: 0.3em 0; }
h3 { font-size: 1em; margin: 0.8em 0 0.3em 0; }
.summary { display: flex; gap: 1.5em; align-items: flex-start; }
.summary > .methods { flex: 0 1 auto; width: min-content; max-width: 65%; overflow-x: auto; }
.summary > .plot { flex: 1 1 24em; min-width: 20em; max-width: 44em; }
#shared-plot { width: 100%; }
table.merged { font-size: 0.8em; }
table.merged td, table.merged th { white-space: nowrap; padding: 0.15em 0.35em; }
.runs { display: flex; gap: 1.5em; align-items: flex-start; overflow-x: auto;
        border-top: 1px solid #ccc; margin-top: 1em; }
.run { flex: 1 1 0; min-width: 28em; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { border: 1px solid #bbb; padding: 0.15em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.merged td:nth-child(2), table.merged th:nth-child(2) { text-align: left; }
tr.best td { font-weight: bold; }
summary { cursor: pointer; font-size: 0.9em; margin: 0.5em 0; }
img { max-width: 100%; display: block; margin-bottom: 0.5em; }
figure { margin: 0.5em 0; }
figcaption { font-size: 0.8em; color: #555; }
.note { font-size: 0.8em; color: #555; }
"""


def markdown_to_html(text: str) -> str:
    """The small Markdown subset loupe writes: ``#`` headings, pipe tables and paragraphs
    (everything escaped; no raw HTML passes through)."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush_table() -> None:
        if not table:
            return
        head, *body = table
        out.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr></thead>")
        out.append("<tbody>" + "".join(
            "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body
        ) + "</tbody></table>")
        table.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # skip the separator row
                table.append(cells)
            continue
        flush_table()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    return "\n".join(out)


def _run_section(name: str, folder: Path) -> str:
    """A run without results.json: its report.md and figures."""
    _check_run(name, folder)
    parts = [f'<section class="run"><h2>{html.escape(name)}</h2>']
    parts.append(markdown_to_html((folder / "report.md").read_text(encoding="utf-8")))
    parts.append(runs_page.figures(name, folder, skip=()))
    parts.append("</section>")
    return "\n".join(parts)


def embedded_figure(image: Path, caption: str | None = None) -> str:
    """A ``<figure>`` with the PNG ``image`` embedded (base64) and its caption (default: the
    file name)."""
    if not image.is_file():
        raise FileNotFoundError(f"{image}: figure not found")
    data = base64.b64encode(image.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(image.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption or image.name)}</figcaption></figure>")


def write_html_page(
    path: str | os.PathLike[str], *, title: str, sections: Sequence[str | Path],
) -> None:
    """Write one self-contained HTML page, atomically: ``sections`` in order, each Markdown
    text (:func:`markdown_to_html`) or a PNG file (embedded, see :func:`embedded_figure`)."""
    body = [embedded_figure(s) if isinstance(s, Path) else markdown_to_html(s)
            for s in sections]
    _write_page(path, title, "\n".join(body))


def _write_page(path: str | os.PathLike[str], title: str, body: str) -> None:
    """The page ``title`` (also its heading) with the ``body`` HTML, written atomically."""
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")


def _check_run(name: str, folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"run {name!r}: folder {folder} does not exist")
    if not (folder / "report.md").is_file():
        raise ValueError(f"run {name!r}: {folder / 'report.md'} is missing (write it with "
                         "write_report_md)")


def _evaluation(name: str, folder: Path) -> dict | None:
    """The results.json of a ``loupe evaluate`` run folder, or None (another kind of run)."""
    _check_run(name, folder)
    path = folder / "results.json"
    if not path.is_file():
        return None
    results = read_json(path, "evaluation results")
    if not isinstance(results, dict) or not isinstance(results.get("methods"), dict):
        return None  # e.g. the demo's results.json
    return results


def _summary(evaluated: dict[str, dict]) -> str:
    """The top of the page: the merged table and the shared plot, side by side."""
    plot = runs_page.shared_plot(evaluated)
    note = ("All figures in %. Each method at its best threshold (thr.) on these images "
            "(optimistic; the spread, max - min mIoU over a threshold range, shows how much it "
            "matters); @T: mIoU at threshold T; interval: bootstrap over images; prec., recall: "
            "means over classes. Best first.")
    return ('<div class="summary"><div class="methods">' + runs_page.merged_table(evaluated)
            + f'<p class="note">{html.escape(note)}</p></div>'
            + (f'<div class="plot">{plot}</div>' if plot else "") + "</div>")


def write_html_report(
    path: str | os.PathLike[str],
    runs: Mapping[str, str | os.PathLike[str]],
    *,
    title: str | None = None,
) -> None:
    """Write one HTML page of the runs, atomically: evaluation runs merged at the top (one
    table of all their methods, one shared mIoU-threshold plot) and a section per run.

    Args:
        runs: run name -> run folder (holding ``report.md``, ``*.png`` and, for evaluation
            runs, ``results.json``), in column order.
        title: the page title (default: the data sets and the run names).
    """
    if not runs:
        raise ValueError("write_html_report needs at least one run")
    folders = {name: Path(folder) for name, folder in runs.items()}
    evaluated = {name: r for name, folder in folders.items()
                 if (r := _evaluation(name, folder)) is not None}
    sections = [runs_page.run_section(name, folder, evaluated[name]) if name in evaluated
                else _run_section(name, folder) for name, folder in folders.items()]
    title = title or (runs_page.page_title(evaluated) if evaluated else "loupe runs")
    _write_page(path, title, (_summary(evaluated) if evaluated else "")
                + "\n<div class=\"runs\">\n" + "\n".join(sections) + "\n</div>")
