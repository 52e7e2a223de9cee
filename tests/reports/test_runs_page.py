"""The page of several evaluation runs: one merged table of every run's methods (best first),
one shared mIoU-threshold plot, per-class tables folded with only the classes present, real
titles. Hand-built results.json files, values checked cell by cell."""

from __future__ import annotations

import base64
import re

import pytest
from PIL import Image

from loupe.io import write_json
from loupe.reports import write_html_report
from loupe.reports.runs_page import merged_rows, page_title, per_class_details, present_classes

NAMES = ["background", "cat", "dog", "<b>bird</b>"]


def method(miou: float, threshold: float | None, iou: dict, confusion: list | None = None,
           sweep: bool = True) -> dict:
    entry = {"kind": "maps" if sweep else "masks", "threshold": threshold, "miou": miou,
             "iou": iou, "precision": {k: 0.5 for k in iou}, "recall": {k: 0.25 for k in iou},
             "confusion": confusion or [[5, 0, 0, 0], [0, 3, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]}
    if sweep:
        entry["sweep"] = {"thresholds": [0.1, 0.2, 0.3], "miou": [miou - 0.1, miou, miou - 0.2],
                          "best_miou": miou, "best_threshold": threshold,
                          "fixed": {"0.1": miou - 0.1, "0.3": miou - 0.2},
                          "spread_range": [0.1, 0.3], "spread": 0.2, "spread_std": 0.08}
        entry["miou_interval"] = {"observed": miou, "low": miou - 0.05, "high": miou + 0.05,
                                  "level": 0.95, "n": 100}
    return entry


def results(methods: dict, split: str = "val") -> dict:
    return {"dataset": {"kind": "voc", "split": split}, "images": 12, "class_names": NAMES,
            "ignored_classes": [], "methods": methods, "comparisons": []}


def make_run(folder, methods: dict, colour=(255, 0, 0)):
    folder.mkdir()
    write_json(folder / "results.json", results(methods))
    (folder / "report.md").write_text("# Evaluation\n")
    Image.new("RGB", (6, 4), colour).save(folder / "overlays.png")
    Image.new("RGB", (6, 4), (0, 0, 0)).save(folder / "miou_vs_threshold.png")
    return folder


IOU = {"background": 0.9, "cat": 0.6, "dog": 0.4, "<b>bird</b>": None}


def test_merged_rows_best_first_with_every_run():
    runs = {"first": results({"cam": method(0.40, 0.2, IOU), "gradcam": method(0.55, 0.3, IOU)}),
            "second": results({"masks": method(0.50, None, IOU, sweep=False)})}
    header, rows = merged_rows(runs)
    assert header == ["run", "method", "mIoU", "thr.", "95% interval", "@0.1", "@0.3", "spread",
                      "prec.", "recall"]
    assert [r[:4] for r in rows] == [["first", "gradcam", "55.0", "0.30"],
                                     ["second", "masks", "50.0", "-"],
                                     ["first", "cam", "40.0", "0.20"]]
    assert rows[0][4:] == ["50.0 - 60.0", "45.0", "35.0", "20.0", "50.0", "25.0"]
    assert rows[1][4:] == ["-", "n/a", "n/a", "n/a", "50.0", "25.0"]
    _, single = merged_rows({"only": runs["first"]})
    assert single[0][:2] == ["gradcam", "55.0"]  # no run column with one run


def test_per_class_table_is_folded_and_shows_only_classes_present():
    data = results({"cam": method(0.4, 0.2, IOU), "gradcam": method(0.5, 0.3, IOU)})
    assert present_classes(data) == [0, 1, 2]  # bird has no ground-truth pixel
    text = per_class_details(data)
    assert text.startswith("<details><summary>IoU per class (%)")
    assert "3 classes present, 1 absent from these images left out" in text
    assert "<td>cat</td><td>60.0</td><td>60.0</td>" in text and "bird" not in text


def test_page_merges_runs_at_the_top(tmp_path):
    a = make_run(tmp_path / "a", {"cam": method(0.40, 0.2, IOU)})
    b = make_run(tmp_path / "b", {"<i>x</i>": method(0.55, 0.3, IOU)}, colour=(0, 0, 255))
    page_path = tmp_path / "page.html"
    write_html_report(page_path, {"run A": a, "run B": b})
    page = page_path.read_text()
    title = "loupe evaluation: voc val, 12 images (run A, run B)"
    assert page_title({"run A": results({}), "run B": results({})}) == title
    assert f"<title>{title}</title>" in page and f"<h1>{title}</h1>" in page
    assert page.count("<table class=\"merged\">") == 1 and page.count('id="shared-plot"') == 1
    # the merged table and the plot come before the first run's section
    assert page.index('table class="merged"') < page.index('id="shared-plot"') \
        < page.index('<section class="run">')
    assert '<tr class="best"><td>run B</td><td>&lt;i&gt;x&lt;/i&gt;</td><td>55.0</td>' in page
    assert "<i>" not in page and page.count("<details>") == 2
    # each run's overlays are embedded with a real caption; its own plot is merged, not repeated
    for folder in (a, b):
        encoded = base64.b64encode((folder / "overlays.png").read_bytes()).decode()
        assert f"data:image/png;base64,{encoded}" in page
        plot = base64.b64encode((folder / "miou_vs_threshold.png").read_bytes()).decode()
        assert plot not in page
    assert "run A: sample images, their ground truth and each method&#x27;s mask" in page
    shared = re.search(r'id="shared-plot"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert shared and len(base64.b64decode(shared.group(1))) > 5000  # a drawn figure


def test_given_title_wins(tmp_path):
    a = make_run(tmp_path / "a", {"cam": method(0.4, 0.2, IOU)})
    write_html_report(tmp_path / "p.html", {"a": a}, title="Mine & yours")
    assert "<h1>Mine &amp; yours</h1>" in (tmp_path / "p.html").read_text()


@pytest.mark.parametrize("bad", [[], {"methods": "no"}])
def test_runs_without_evaluation_results_fall_back_to_report_md(tmp_path, bad):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "report.md").write_text(
        "# Demo\n\n| method | best mIoU (%) |\n|---|---|\n| cam | 50.0 |\n")
    write_json(folder / "results.json", bad)
    write_html_report(tmp_path / "p.html", {"demo": folder})
    page = (tmp_path / "p.html").read_text()
    assert "<td>cam</td><td>50.0</td>" in page and "merged" not in page.split("<style>")[0]
    assert 'class="merged"' not in page and "<title>loupe runs</title>" in page
