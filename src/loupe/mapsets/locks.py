"""Locks that let several processes write into one output folder: an exclusive lock around
the check and write of a run description, and per-chunk claims so that concurrent runs share
the work instead of each doing all of it.

Both are ``flock`` locks on small files in the output folder: the kernel releases a lock when
its process ends, however it ends, so a killed run never leaves a chunk claimed (its lock
file stays, and the next run takes it over). ``flock`` works across the processes of one
machine and, on Linux NFS clients, across machines. Where ``fcntl`` does not exist
(Windows) the locks are no-ops: one process per folder there.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the lock file ``path`` (created if needed and left in place:
    removing it could let two processes hold "the" lock on two different files), waiting for
    other holders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class Claim:
    """A chunk this process holds (see :func:`try_claim`)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self, finished: bool) -> None:
        """Let the chunk go. ``finished``: its outputs are all written, so the lock file is
        removed first (a process that opens it later finds the outputs and skips the
        chunk); otherwise it stays for the next run to take over."""
        if self._fd is None:
            return
        if finished:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def try_claim(path: Path) -> Claim | None:
    """Claim the chunk whose lock file is ``path`` without waiting: a :class:`Claim`, or None
    when another live process holds it. The file records the holder (``host pid``) for
    people; a file left by a dead process is simply taken over. The caller checks, after
    claiming, whether the chunk is still to do (another process may have finished it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
    return Claim(path, fd)
