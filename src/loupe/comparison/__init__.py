"""``loupe compare``: which map method works for this model and these images? The maps of
several methods (:mod:`loupe.mapsets`), optional CRF-refined references, one evaluation pass
(:mod:`loupe.evaluation`), a ranked table with paired bootstrap intervals against a reference,
the mIoU-threshold plot, per-image results and an HTML page (:mod:`~loupe.comparison.run`)."""

from loupe.comparison.config import BASELINES, CompareConfig, Row, comparison_rows
from loupe.comparison.report import ranked_table
from loupe.comparison.results import ComparisonResults
from loupe.comparison.run import run_comparison

__all__ = [
    "BASELINES",
    "CompareConfig",
    "ComparisonResults",
    "Row",
    "comparison_rows",
    "ranked_table",
    "run_comparison",
]
