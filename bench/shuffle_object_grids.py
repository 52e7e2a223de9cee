"""Grids relative to the object size, as an oracle bound (docs/shuffle-saliency.md, "After the
test run", item 3): from the dev screening's maps of the grid variants, each image gets the
grids its ground-truth object size calls for, and the selection is compared with the default.

    python bench/shuffle_object_grids.py --work /work/runs-shuffle/dev --sets coco cats

Object size: the share of an image's pixels that its ground truth labels as an object (any
class, evaluated or ignored). Within each dev set the images are split into terciles of that
share: the smallest third takes ``grids=(3, 4, 5)``, the middle third the default (2, 3, 4),
the largest third ``(2, 3)``. Reads the cached per-image statistics of bench/shuffle_dev.py's
evaluate stage (``<work>/<set>/stats``); computes nothing new about the maps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shuffle_dev import dev_sets  # noqa: E402
from shuffle_dev_eval import difference, load_truth, stats_path  # noqa: E402
from study_eval import interval_cell, load_stats  # noqa: E402

DEFAULT = "shuffle-T16"
BY_TERCILE = ("shuffle-T16-g345", DEFAULT, "shuffle-T16-g23")  # small, middle, large objects
LABELS = ("smallest third", "middle third", "largest third")


def object_shares(masks: list[torch.Tensor]) -> torch.Tensor:
    """``(I,)`` the share of each mask's pixels labelled as an object (anything but 0)."""
    return torch.tensor([float((m > 0).float().mean()) for m in masks])


def terciles(shares: torch.Tensor) -> torch.Tensor:
    """``(I,)`` 0 / 1 / 2: the smallest, middle and largest third by share (ties by order)."""
    order = torch.sort(shares, stable=True).indices
    n = len(order)
    tercile = torch.empty(n, dtype=torch.long)
    tercile[order[: n // 3]] = 0
    tercile[order[n // 3: n - n // 3]] = 1
    tercile[order[n - n // 3:]] = 2
    return tercile


def cell(args: argparse.Namespace, a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]
         ) -> str:
    """Best mIoU of ``a`` minus ``b`` with its interval, as the dev screening computes it."""
    return interval_cell(difference(args, a, b, names)["best"])


def rows_for(args: argparse.Namespace, dev_set, fraction: float) -> list[str]:
    truth = load_truth(dev_set)
    tercile = terciles(object_shares(truth.masks))
    stats = {name: load_stats(stats_path(args.work, dev_set, name, fraction)).stats
             for name in BY_TERCILE}
    selected = stats[DEFAULT].clone()
    for t, name in enumerate(BY_TERCILE):
        selected[tercile == t] = stats[name][tercile == t]
    out = [f"| {dev_set.name} | {fraction:g} | selection by object size | all "
           f"{len(tercile)} | {cell(args, selected, stats[DEFAULT], ('selected', DEFAULT))} |"]
    for t, label in enumerate(LABELS):
        keep = tercile == t
        for name in BY_TERCILE:
            if name == DEFAULT:
                continue
            diff = cell(args, stats[name][keep], stats[DEFAULT][keep], (name, DEFAULT))
            out.append(f"| {dev_set.name} | {fraction:g} | `{name}` minus default | {label}, "
                       f"{int(keep.sum())} | {diff} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/work/runs-shuffle/dev"))
    p.add_argument("--assets", type=Path, default=Path("/work/shared/assets"))
    p.add_argument("--loop", type=Path, default=Path("/work/runs-shuffle/loop"))
    p.add_argument("--sets", nargs="+", default=["coco", "cats"], choices=["coco", "cats"])
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    args = p.parse_args(argv)
    lines = ["| set | smoothing | rows | images (tercile) | best mIoU minus the default "
             "(2, 3, 4), 95% interval |", "|---|---|---|---|---|"]
    for dev_set in dev_sets(args):
        for fraction in (0.0, 0.02):
            lines += rows_for(args, dev_set, fraction)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
