"""glibc's malloc settings for the ``loupe`` command's own process.

A model's activations on the CPU are large, short-lived buffers. glibc maps every buffer above
its mmap threshold afresh from the kernel and unmaps it when freed, and gives freed heap back
to the kernel above its trim threshold, so each chunk of perturbed or shuffled copies faults
its memory in again: Score-CAM on the ImageNet MobileNetV2 at 224x224 spent 9.5 of 25.1 s in
the kernel, and `loupe maps` with shuffle on six coco128 photos 38 of 114 s (docs/speed.md).
The command owns its process, so it raises both thresholds before any work (the values that
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` would set); the library never touches
the allocator of a program that imports it.

Nothing is changed off glibc (``mallopt`` not found), or when the user chose for themselves:
any of :data:`USER_SETTINGS` in the environment (``LOUPE_MALLOC=default`` keeps glibc's own
behaviour).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping

# glibc's mallopt parameters (malloc.h) and the values set: the largest mmap threshold glibc's
# own dynamic adjustment can reach on 64-bit systems (buffers above it are still mapped and
# unmapped at once), and a trim threshold that keeps up to 1 GiB of freed heap for reuse.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
                 "LOUPE_MALLOC")


def tune_malloc(environ: Mapping[str, str] = os.environ, platform: str = sys.platform,
                load: Callable[[str], object] = ctypes.CDLL) -> bool:
    """Set glibc's mmap and trim thresholds of this process (:data:`MMAP_THRESHOLD`,
    :data:`TRIM_THRESHOLD`); True when both were set, False when nothing was changed (not
    Linux, no glibc, or one of :data:`USER_SETTINGS` in ``environ``)."""
    if not platform.startswith("linux") or any(name in environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = load("libc.so.6").mallopt  # type: ignore[attr-defined]
    except (OSError, AttributeError):  # musl or another C library: leave it alone
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
