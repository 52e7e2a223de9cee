"""``loupe faithfulness``: faithfulness metrics (deletion, insertion, ROAD, confidence change,
pointing games, the randomisation check) of several map methods on a data set or on image
files, with bootstrap intervals over images (:func:`run_faithfulness`). The metrics
themselves are :mod:`loupe.metrics.faithfulness`."""

from loupe.faithfulness.batches import ImageBatch, image_batches, image_files, open_source
from loupe.faithfulness.config import (
    FaithfulnessConfig,
    MethodRow,
    config_of_maps,
    method_rows,
)
from loupe.faithfulness.results import faithfulness_markdown, faithfulness_results
from loupe.faithfulness.run import chosen_metrics, run_faithfulness

__all__ = [
    "FaithfulnessConfig",
    "ImageBatch",
    "MethodRow",
    "chosen_metrics",
    "config_of_maps",
    "faithfulness_markdown",
    "faithfulness_results",
    "image_batches",
    "image_files",
    "method_rows",
    "open_source",
    "run_faithfulness",
]
