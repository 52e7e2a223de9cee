"""``explain.json``: what a ``loupe explain`` output folder holds and how it was made.

Files are named ``<image stem>.<method>.<class>`` (``.box<N>`` added for the N-th detection of
that class), ``.npz`` and ``.png``, so that other targets and methods never overwrite each
other. Everything else that changes a file is recorded: the settings of the folder (model,
weights fingerprint, preprocessing and view, class names, score kind, overlay look) and those
of each method (options, target layer) must match for a run to write into the folder again; a
run with other settings is refused before the model runs (one line naming what differs), so
that nothing is overwritten silently. ``images`` and ``outputs`` list what each image gave:
sizes, classes, names, scores, boxes, the raw range of each map.

The record is rewritten atomically as images finish (at most every :data:`SAVE_EVERY` seconds,
and when the run ends or is interrupted), so a killed run leaves a valid file.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loupe import __version__
from loupe.io import read_json, to_jsonable, write_json

RUN_FILE = "explain.json"
FORMAT = (
    "loupe explain 1: <image>.<method>.<class>[.box<N>].npz with maps (1, h, w) float16 at the "
    "model input's resolution divided by peak (1,) float32, classes (1,) int64, scores (1,) "
    "float32 (boxes (1, 4) float32 x1 y1 x2 y2 in input pixels for detection); .png the overlay"
)
SAVE_EVERY = 2.0


def output_name(stem: str, method: str, cls: int, box_index: int | None = None) -> str:
    """``stem.method.cls`` or ``stem.method.cls.boxN`` (no suffix)."""
    name = f"{stem}.{method}.{cls}"
    return name if box_index is None else f"{name}.box{box_index}"


class ExplainRecord:
    """The ``explain.json`` of an output folder for a run of ``method`` with ``settings``
    (the folder's) and ``method_settings``. Raises a ValueError naming the differences when
    the folder holds outputs made with other settings."""

    def __init__(self, out: Path, settings: Mapping[str, Any], method: str,
                 method_settings: Mapping[str, Any]) -> None:
        self.path = out / RUN_FILE
        settings, method_settings = to_jsonable(settings), to_jsonable(method_settings)
        old = self._read() if self.path.is_file() else None
        if old is not None and not old["outputs"]:  # a run that wrote nothing binds nothing
            old = None
        if old is not None:
            _check_same(self.path, "settings", old.get("settings", {}), settings)
            if any(entry.get("method") == method for entry in old["outputs"].values()):
                _check_same(self.path, f"{method} settings", old["methods"].get(method, {}),
                            method_settings)
        self.data: dict[str, Any] = old or {
            "format": FORMAT, "loupe": __version__, "settings": settings, "methods": {},
            "images": {}, "outputs": {},
        }
        self.data["loupe"] = __version__
        self.data["methods"][method] = method_settings
        self._saved = 0.0
        self._changed = False

    def _read(self) -> dict[str, Any]:
        data = read_json(self.path, "explain run record")
        if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
            raise ValueError(f"{self.path}: not a loupe explain record; use another --out")
        for key in ("methods", "images", "outputs"):
            data.setdefault(key, {})
        return data

    def add_image(self, stem: str, info: Mapping[str, Any]) -> None:
        """What image ``stem`` gave: ``info`` replaces an earlier entry of the same stem, but
        its ``outputs`` are added to the earlier ones (other targets and methods stay)."""
        entry = to_jsonable(info)
        earlier = self.data["images"].get(stem, {}).get("outputs", [])
        new = entry.get("outputs", [])
        entry["outputs"] = earlier + [name for name in new if name not in earlier]
        self.data["images"][stem] = entry
        self._changed = True

    def add_output(self, name: str, info: Mapping[str, Any]) -> None:
        """One output's entry (see :func:`output_name`)."""
        self.data["outputs"][name] = to_jsonable(info)
        self._changed = True

    def save(self, force: bool = False) -> None:
        """Write the record if anything was added and ``force`` or :data:`SAVE_EVERY` seconds
        passed since the last write (a run that explains nothing leaves the folder as it
        was)."""
        now = time.monotonic()
        if self._changed and (force or now - self._saved >= SAVE_EVERY):
            write_json(self.path, self.data)
            self._saved = now


def _check_same(path: Path, what: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        details = "; ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}"
                            for k in changed[:3])
        raise ValueError(
            f"{path}: this folder holds explanations made with other {what} ({details}); "
            "use another --out, or delete the folder to start over"
        )


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
