"""Evaluating map (or mask) folders against a data set's ground truth (``loupe evaluate``):
the sources (:mod:`~loupe.evaluation.sources`), one pass that tallies confusion matrices and
localization records (:mod:`~loupe.evaluation.tally`), the results
(:mod:`~loupe.evaluation.results`) and the run folder (:mod:`~loupe.evaluation.report`)."""

from loupe.evaluation.report import (
    check_evaluation_folder,
    report_markdown,
    write_evaluation,
    write_run,
)
from loupe.evaluation.results import ResultOptions, build_results
from loupe.evaluation.sources import Source, ignored_class_indices, make_sources, relabel
from loupe.evaluation.tally import EvaluationConfig, Tally, evaluate_sources

__all__ = [
    "EvaluationConfig",
    "ResultOptions",
    "Source",
    "Tally",
    "build_results",
    "check_evaluation_folder",
    "evaluate_sources",
    "ignored_class_indices",
    "make_sources",
    "relabel",
    "report_markdown",
    "write_evaluation",
    "write_run",
]
