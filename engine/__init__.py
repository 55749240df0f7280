"""EquiTriage engine: find likely breast-cancer metastases in whole-slide images, offline.

The public API is small: :func:`open_slide`, :class:`Model`, :func:`analyse_slide`,
:func:`analyse_file` (one slide file into its result folder: the one path the command line, the
batch and the app share) and :func:`run_batch`, plus :func:`results_name` (the result folder of
an input) and :class:`SlideSummary` (a finished analysis). They are imported on first use, so
``import engine`` stays light. Nothing here imports torch, e2cnn or Qt.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# onnxruntime 1.29 and later send usage events to Microsoft from Linux and macOS too, unless this
# is set before it starts (Windows: ``Model.load`` turns its events off). An offline medical tool
# reports nothing anywhere: every process that runs a model imports this package first.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

_EXPORTS = {
    "open_slide": "engine.slide",
    "Model": "engine.model",
    "analyse_slide": "engine.pipeline",
    "analyse_file": "engine.batch",
    "run_batch": "engine.batch",
    "results_name": "engine.identity",
    "SlideSummary": "engine.summary",
}
__all__ = [
    "Model",
    "SlideSummary",
    "__version__",
    "analyse_file",
    "analyse_slide",
    "open_slide",
    "results_name",
    "run_batch",
]

if TYPE_CHECKING:
    from engine.batch import analyse_file, run_batch
    from engine.identity import results_name
    from engine.model import Model
    from engine.pipeline import analyse_slide
    from engine.slide import open_slide
    from engine.summary import SlideSummary


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
