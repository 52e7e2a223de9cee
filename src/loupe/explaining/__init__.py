"""``loupe explain`` as a library: the images and their views (:mod:`.images`), what is
explained for each kind of model (:mod:`.targets`), the settings and model (:mod:`.settings`),
the files (:mod:`.outputs`) and their record ``explain.json`` (:mod:`.record`), and the run
(:mod:`.run`): :class:`ExplainRun` over an :class:`ExplainConfig`."""

from loupe.explaining.record import RUN_FILE, ExplainRecord, output_name
from loupe.explaining.run import ExplainRun, ImageResult
from loupe.explaining.settings import ExplainConfig

__all__ = ["RUN_FILE", "ExplainConfig", "ExplainRecord", "ExplainRun", "ImageResult",
           "output_name"]
