"""One self-contained HTML page that puts several runs side by side.

A run is a folder as loupe writes it: a ``report.md`` (from
:func:`loupe.reports.markdown.write_report_md`) and PNG figures (plots, overlay grids). Each
run becomes a column with its table and its figures; images are embedded (base64), so the page
can be moved or mailed alone.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from loupe.io import atomic_path

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
.runs { display: flex; gap: 1.5em; align-items: flex-start; overflow-x: auto; }
.run { flex: 1 1 0; min-width: 28em; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin-bottom: 1em; }
figcaption { font-size: 0.8em; color: #555; }
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
    if not folder.is_dir():
        raise FileNotFoundError(f"run {name!r}: folder {folder} does not exist")
    report = folder / "report.md"
    if not report.is_file():
        raise ValueError(f"run {name!r}: {report} is missing (write it with write_report_md)")
    parts = [f'<section class="run"><h2>{html.escape(name)}</h2>']
    parts.append(markdown_to_html(report.read_text(encoding="utf-8")))
    parts += [embedded_figure(image) for image in sorted(folder.glob("*.png"))]
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
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")


def write_html_report(
    path: str | os.PathLike[str],
    runs: Mapping[str, str | os.PathLike[str]],
    *,
    title: str = "loupe runs",
) -> None:
    """Write one HTML page with the runs side by side, atomically.

    Args:
        runs: run name -> run folder (holding ``report.md`` and ``*.png``), in column order.
    """
    if not runs:
        raise ValueError("write_html_report needs at least one run")
    sections = [_run_section(name, Path(folder)) for name, folder in runs.items()]
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n<div class=\"runs\">\n"
        + "\n".join(sections)
        + "\n</div></body></html>\n"
    )
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
