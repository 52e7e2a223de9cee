"""Report writers: JSON, Markdown table, PNG plots, HTML page; all atomic."""

from __future__ import annotations

import base64
import json
import statistics

import pytest
import torch
from PIL import Image

from loupe.io import write_json
from loupe.metrics import sweep_summary
from loupe.reports import (
    markdown_table,
    plot_miou_vs_threshold,
    plot_overlay_grid,
    write_html_report,
    write_report_md,
)


def summary():
    # mIoU 0.775, 1.0, 1/3 at thresholds 0.1, 0.2, 0.3 (see tests/metrics/test_sweep.py)
    conf = torch.tensor([[[3, 1], [0, 4]], [[4, 0], [0, 4]], [[2, 2], [2, 2]]])
    return sweep_summary(conf, [0.1, 0.2, 0.3], fixed=(0.1, 0.3), spread_range=(0.1, 0.3))


def strict_json(path):
    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_results_json_round_trip(tmp_path):
    path = tmp_path / "run" / "results.json"
    write_json(path, {
        "summary": summary(),
        "curve": torch.tensor([0.5, float("nan")]),
        "count": 3,
        "path": tmp_path,
    })
    data = strict_json(path)
    assert data["summary"]["best_miou"] == 1.0 and data["summary"]["best_threshold"] == 0.2
    assert data["summary"]["fixed"] == {"0.1": 0.775, "0.3": pytest.approx(1 / 3)}
    assert data["curve"] == [0.5, None]  # NaN is not valid JSON
    assert data["count"] == 3 and data["path"] == str(tmp_path)
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError, match="cannot write 'object' to JSON"):
        write_json(path, {"a": object()})
    assert strict_json(path) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_markdown_table_values():
    text = markdown_table({"cam": summary()})
    header, separator, row = text.strip().splitlines()
    assert header == (
        "| method | best mIoU (%) | best threshold | mIoU@0.1 (%) | mIoU@0.3 (%) "
        "| spread 0.1-0.3 (max-min) | spread 0.1-0.3 (std) |"
    )
    assert separator.count("---") == 7
    std = 100 * statistics.pstdev([0.775, 1.0, 1 / 3])
    assert row == f"| cam | 100.0 | 0.20 | 77.5 | 33.3 | 66.7 | {std:.1f} |"


def test_report_from_json_equals_report_from_summaries(tmp_path):
    write_json(tmp_path / "results.json", {"cam": summary(), "gradcam": summary()})
    loaded = strict_json(tmp_path / "results.json")
    assert markdown_table(loaded) == markdown_table({"cam": summary(), "gradcam": summary()})
    write_report_md(tmp_path / "report.md", loaded, title="Demo", notes="Shared machine.")
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# Demo\n\n| method |") and text.rstrip().endswith("Shared machine.")
    assert text.count("| cam |") == 1 and text.count("| gradcam |") == 1


def test_report_errors():
    with pytest.raises(ValueError, match="empty"):
        markdown_table({})
    with pytest.raises(ValueError, match="'cam' lacks best_miou"):
        markdown_table({"cam": {"fixed": {}, "spread": 0.1, "best_threshold": 0.2}})


def png_colours(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size, len(image.convert("RGB").getcolors(1 << 20) or [])


def test_plot_miou_vs_threshold(tmp_path):
    path = tmp_path / "miou.png"
    thresholds = [0.1, 0.2, 0.3]
    plot_miou_vs_threshold(
        path,
        {"cam": (thresholds, [0.775, 1.0, 1 / 3]), "baseline": (thresholds, [0.2, 0.2, 0.2])},
        intervals={"cam": (thresholds, [0.7, 0.9, 0.3], [0.8, 1.0, 0.4])},
    )
    size, colours = png_colours(path)
    assert size[0] > 300 and colours > 10  # a drawn figure, not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["miou.png"]
    with pytest.raises(ValueError, match="curve 'cam': 2 thresholds for 3"):
        plot_miou_vs_threshold(path, {"cam": ([0.1, 0.2], [0.1, 0.2, 0.3])})
    with pytest.raises(ValueError, match="at least one curve"):
        plot_miou_vs_threshold(path, {})


def test_plot_overlay_grid(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 16, 20, generator=generator)
    gt = torch.zeros(3, 16, 20, dtype=torch.long)
    gt[:, 4:12, 5:15] = 12
    gt[:, 0] = 255
    maps = torch.rand(3, 16, 20, generator=generator)
    narrow = tmp_path / "narrow.png"
    wide = tmp_path / "wide.png"
    plot_overlay_grid(narrow, images, {"ground truth": gt})
    plot_overlay_grid(wide, images, {"ground truth": gt, "cam": maps, "mask": gt})
    (narrow_w, narrow_h), _ = png_colours(narrow)
    (wide_w, wide_h), colours = png_colours(wide)
    assert wide_w > 1.6 * narrow_w and abs(wide_h - narrow_h) < 0.25 * narrow_h
    assert colours > 100
    with pytest.raises(ValueError, match="column 'cam' must be"):
        plot_overlay_grid(wide, images, {"cam": maps[:, :8]})
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\)"):
        plot_overlay_grid(wide, images[:, :2], {"gt": gt})


def make_run(folder, name, png_colour):
    folder.mkdir()
    write_report_md(folder / "report.md", {name: summary()}, title=f"run {name}")
    Image.new("RGB", (4, 4), png_colour).save(folder / "plot.png")
    return folder


def test_html_report_side_by_side(tmp_path):
    a = make_run(tmp_path / "a", "cam", (255, 0, 0))
    b = make_run(tmp_path / "b", "<script>x</script>", (0, 0, 255))
    path = tmp_path / "index.html"
    write_html_report(path, {"first run": a, "second run": b}, title="Compare")
    page = path.read_text()
    assert page.count('<section class="run">') == 2
    assert page.index("first run") < page.index("second run")
    assert "<td>cam</td><td>100.0</td><td>0.20</td>" in page
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    for folder in (a, b):
        encoded = base64.b64encode((folder / "plot.png").read_bytes()).decode()
        assert f"data:image/png;base64,{encoded}" in page


def test_html_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 'x': folder .*nowhere does not exist"):
        write_html_report(tmp_path / "i.html", {"x": tmp_path / "nowhere"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="report.md is missing"):
        write_html_report(tmp_path / "i.html", {"y": tmp_path / "empty"})
    with pytest.raises(ValueError, match="at least one run"):
        write_html_report(tmp_path / "i.html", {})
    assert not (tmp_path / "i.html").exists()


def test_plot_miou_vs_threshold_tells_more_than_ten_curves_apart(tmp_path, monkeypatch):
    """Matplotlib's colour cycle has 10 colours: curves 11+ differ by line style."""
    import loupe.reports.plots as plots

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure))
    curves = {f"m{i}": ([0.1, 0.2], [0.1 * i, 0.05]) for i in range(12)}
    plot_miou_vs_threshold(tmp_path / "miou.png", curves)
    lines = [line for line in drawn[0].axes[0].get_lines() if line.get_label() in curves]
    looks = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert len(lines) == 12 and len(looks) == 12
