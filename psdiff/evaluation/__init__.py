"""Evaluation: detection and person-search metrics under each dataset's registered protocol, the
evaluator that runs a model over a test split, the predictions file, plots and result pictures.

`evaluate(cfg, model, dataset_name)` is the entry point of training and `--eval-only`;
`compute_metrics` recomputes every metric from a predictions file (`tools/evaluate.py`).
"""

from .detection import eval_detection
from .evaluator import (
    PersonSearchEvaluator,
    build_evaluator,
    build_loaders,
    evaluate,
    inference_on_dataset,
)
from .metrics import compute_metrics, metrics_from_cfg
from .predictions import GalleryRows, Predictions
from .ranking import average_precision
from .search import eval_search

__all__ = [
    "GalleryRows",
    "PersonSearchEvaluator",
    "Predictions",
    "average_precision",
    "build_evaluator",
    "build_loaders",
    "compute_metrics",
    "eval_detection",
    "eval_search",
    "evaluate",
    "inference_on_dataset",
    "metrics_from_cfg",
]
