"""Results as a Markdown table and report (JSON is :func:`loupe.io.write_json`)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from loupe.io import atomic_path, json_key
from loupe.metrics.sweep import SweepSummary

Summary = SweepSummary | Mapping[str, object]


def _summary_dict(name: str, summary: Summary) -> Mapping[str, object]:
    data = summary.as_dict() if isinstance(summary, SweepSummary) else summary
    missing = {"best_miou", "best_threshold", "fixed", "spread"} - set(data)
    if missing:
        raise ValueError(f"summary of {name!r} lacks {', '.join(sorted(missing))}")
    return data


def _percent(value: object) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * float(value):.1f}"


def markdown_table(table: Mapping[str, Summary]) -> str:
    """The Markdown table of sweep summaries, one row per method, mIoU in %:
    method | best mIoU | best threshold | mIoU at each fixed threshold | spread | spread std.

    Fixed-threshold columns are the union over methods (``n/a`` where a method lacks one).
    """
    if not table:
        raise ValueError("the results table is empty: no method to report")
    rows = {name: _summary_dict(name, summary) for name, summary in table.items()}
    fixed_keys: list[str] = []
    for data in rows.values():
        for key in data["fixed"]:  # type: ignore[union-attr]
            if json_key(key) not in fixed_keys:
                fixed_keys.append(json_key(key))
    fixed_keys.sort(key=float)
    spread_range = next(iter(rows.values())).get("spread_range")
    spread_label = "spread"
    if spread_range:
        lo, hi = spread_range  # type: ignore[misc]
        spread_label = f"spread {float(lo):g}-{float(hi):g}"
    header = (
        ["method", "best mIoU (%)", "best threshold"]
        + [f"mIoU@{k} (%)" for k in fixed_keys]
        + [f"{spread_label} (max-min)", f"{spread_label} (std)"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name, data in rows.items():
        fixed = {json_key(k): v for k, v in data["fixed"].items()}  # type: ignore[union-attr]
        cells = (
            [name, _percent(data["best_miou"]), f"{float(data['best_threshold']):.2f}"]
            + [_percent(fixed.get(k)) for k in fixed_keys]
            + [_percent(data["spread"]), _percent(data.get("spread_std"))]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report_md(
    path: str | os.PathLike[str],
    table: Mapping[str, Summary],
    *,
    title: str = "Pseudo-mask mIoU",
    notes: str = "",
) -> None:
    """Write a Markdown report: a title, the table of :func:`markdown_table`, and ``notes``
    (free Markdown) below it, atomically. ``table`` maps method -> :class:`SweepSummary` or
    its ``as_dict()`` form (e.g. read back from results.json)."""
    text = f"# {title}\n\n{markdown_table(table)}"
    if notes:
        text += f"\n{notes.strip()}\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
