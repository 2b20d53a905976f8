"""merc-toolkit pipeline: corpora -> features cache -> trainer -> reports.

The Python API (``pipeline/api.py``), importable from here::

    from pipeline import read_corpus, extract_features, train_method, load_run, compare_methods
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

API = ("read_corpus", "extract_features", "run_extraction", "train_method", "finetune_encoder", "load_run", "Run",
       "predict_inputs", "export_run", "compare_methods", "transcribe", "prediction_frame")
__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    """The API names, imported on first use (``python -m pipeline`` and worker processes stay light)."""
    if name in API:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
