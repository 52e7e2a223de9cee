"""Several processes on one output folder: the run description checked and written under a
lock (two runs with clashing settings cannot both pass the check), and chunks of images
claimed one at a time (two ``loupe maps`` processes on one ``--out`` share the work, as
``torchrun`` ranks do).

A chunk is a fixed run of consecutive images (see :mod:`loupe.mapsets.generate`); its lock
file is ``<out>/.chunk-<first>-<last>.lock`` (:func:`loupe.mapsets.locks.try_claim`), removed
once its map files are all written. Processes that share a folder should use the same
``--batch-size``: with another one their chunks overlap, and an image may then be computed
twice (its file is written atomically either way, so nothing is ever mixed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from loupe import distributed
from loupe.io import to_jsonable, write_json
from loupe.mapsets.files import check_same_run, read_run_description
from loupe.mapsets.locks import Claim, exclusive, try_claim

logger = logging.getLogger(__name__)


def record_run(path: Path, description: Mapping[str, Any], what: str,
               extent: Mapping[str, int], reasons: Mapping[str, str] | None = None) -> None:
    """Check ``description`` against the run description at ``path`` (see
    :func:`check_same_run`) and write it, with ``extent`` (how much the runs covered: the
    largest of the old and new counts), all under an exclusive lock on ``.<name>.lock``; on
    every rank (rank 0 writes; its error, if any, is raised on all ranks)."""
    check_same_run(path, description, what, ("extent",), reasons)  # all ranks, before writes
    distributed.barrier()
    error = None
    if distributed.is_main():
        try:
            with exclusive(path.with_name(f".{path.name}.lock")):
                check_same_run(path, description, what, ("extent",), reasons)
                for stale in path.parent.glob(f".{path.name}.tmp-*"):
                    stale.unlink(missing_ok=True)  # a killed writer's, under the lock
                write_json(path, {**to_jsonable(description),
                                  "extent": _merged_extent(path, what, extent)})
        except ValueError as failure:
            error = str(failure)
    error = distributed.broadcast_object(error)
    if error is not None:
        raise ValueError(error)


def _merged_extent(path: Path, what: str, extent: Mapping[str, int]) -> dict[str, int]:
    old = read_run_description(path, what).get("extent", {}) if path.is_file() else {}
    old = old if isinstance(old, dict) else {}
    return {key: max(int(value), int(old.get(key) or 0)) for key, value in extent.items()}


class ChunkClaims:
    """A DataLoader ``batch_sampler`` that yields each chunk of ``chunks`` (lists of indices
    into ``paths``, the output files) that is not done and that this process could claim;
    chunks that another live process holds are skipped (``elsewhere`` counts their images).
    Call :meth:`finished` after writing a chunk's files, :meth:`release_all` at the end."""

    def __init__(self, out: Path, chunks: Sequence[list[int]], paths: Sequence[Path]) -> None:
        self.out = out
        self.chunks = chunks
        self.paths = paths
        self.elsewhere = 0
        self._held: dict[int, Claim] = {}

    def _todo(self, chunk: list[int]) -> int:
        return sum(not self.paths[i].is_file() for i in chunk)

    def __iter__(self) -> Iterator[list[int]]:
        for chunk in self.chunks:
            if not self._todo(chunk):
                continue
            claim = try_claim(self.out / f".chunk-{chunk[0]}-{chunk[-1]}.lock")
            if claim is None:
                self.elsewhere += self._todo(chunk)
                continue
            if not self._todo(chunk):  # another process finished it meanwhile
                claim.release(finished=True)
                continue
            for index in chunk:  # temp files of a killed writer of this chunk
                target = self.paths[index]
                for stale in target.parent.glob(f".{target.name}.tmp-*"):
                    stale.unlink(missing_ok=True)
            self._held[chunk[0]] = claim
            yield chunk

    def __len__(self) -> int:
        return len(self.chunks)

    def finished(self, first: int) -> None:
        """The chunk starting at index ``first`` is written: release it for good."""
        claim = self._held.pop(first, None)
        if claim is not None:
            claim.release(finished=True)

    def release_all(self) -> None:
        """Let every chunk still held go (their lock files stay for the next run)."""
        for claim in self._held.values():
            claim.release(finished=False)
        self._held.clear()
