"""``loupe report`` of two real evaluation runs, rendered by headless Chromium at 1280x800:
the merged table of the methods and the shared mIoU-threshold plot are in the first screen.
Skipped with a reason where Chromium is absent (``apt-get install chromium``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from loupe.cli import main

from .conftest import SYNTHETIC

WIDTH, HEIGHT = 1280, 800

# Appended to a copy of the page: the layout of the parts that must be in the first screen,
# written into the DOM that --dump-dom prints.
LAYOUT_PROBE = """
<script>
window.addEventListener("load", () => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
  const table = document.querySelector("table.merged");
  const plot = document.getElementById("shared-plot");
  const layout = {viewport: [window.innerWidth, window.innerHeight], table: box(table),
    header: box(table.rows[0]), best: box(table.rows[1]), rows: table.rows.length,
    plot: box(plot), plotLoaded: plot.complete && plot.naturalWidth > 0,
    sections: document.querySelectorAll("section.run").length,
    firstSection: box(document.querySelector("section.run"))};
  const out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify(layout);
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium not found (apt-get install chromium)")


def render(browser: str, page: Path, *args: str) -> str:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=5000", *args,
               page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def two_runs(tiny_run: Path, tmp_path_factory) -> dict[str, Path]:
    """Evaluations of the tiny classifier's CAM and Grad-CAM maps (one run) and of its
    saliency maps (another), on six synthetic images, as loupe writes them."""
    root = tmp_path_factory.mktemp("report-page")
    data = [*SYNTHETIC, "--limit", "6"]
    for method in ("cam", "gradcam", "saliency"):
        assert main(["maps", *data, "--model", str(tiny_run), "--method", method,
                     "--out", str(root / method)]) == 0
    runs = {"CAM family": ("cam", "gradcam"), "gradients": ("saliency",)}
    for name, methods in runs.items():
        assert main(["evaluate", "--maps", *(str(root / m) for m in methods), *data,
                     "--bootstrap", "50", "--overlays", "3", "--out", str(root / name)]) == 0
    return {name: root / name for name in runs}


def test_report_puts_the_merged_table_and_the_plot_in_the_first_screen(two_runs, tmp_path):
    browser = chromium()
    page = tmp_path / "report.html"
    assert main(["report", *map(str, two_runs.values()), "--out", str(page)]) == 0
    html = page.read_text()
    assert "<h1>loupe evaluation: synthetic, 6 images (CAM family, gradients)</h1>" in html
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = render(browser, probe, "--dump-dom")
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    width, height = layout["viewport"]  # the window less the browser's own bars
    assert width == WIDTH and 600 <= height <= HEIGHT
    assert layout["rows"] == 1 + 3 and layout["sections"] == 2
    # the whole plot and the table's header and best row lie inside the first screen
    plot, table = layout["plot"], layout["table"]
    assert layout["plotLoaded"]
    assert 0 <= plot["top"] and plot["bottom"] <= height and plot["right"] <= width
    assert plot["right"] - plot["left"] >= 400  # readable, not a thumbnail
    assert 0 <= table["top"] < layout["best"]["bottom"] <= height
    assert table["right"] <= width  # every column visible without scrolling
    # both come before the runs' own sections
    assert max(table["top"], plot["top"]) < layout["firstSection"]["top"]
    shot = tmp_path / "first-screen.png"
    render(browser, page, f"--screenshot={shot}")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        # the plot's region is a drawn figure (many colours), not blank page
        left, top = int(plot["left"]), int(plot["top"])
        region = image.convert("RGB").crop((left, top, int(plot["right"]), int(plot["bottom"])))
        assert len(set(region.getdata())) > 50
