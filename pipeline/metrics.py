"""Evaluation metrics (scikit-learn), one function per task.

Classification (MELD, IEMOCAP): accuracy, weighted F1, macro F1, per-class F1 / precision / recall /
support and the confusion matrix (rows = true class, columns = predicted).

Regression (CMU-MOSI / MOSEI sentiment in [-3, 3]): MAE, Pearson r, Acc7 (labels and predictions
rounded after clipping to [-3, 3]), Acc5 (clipped to [-2, 2], then rounded), and binary accuracy /
weighted F1 in the two conventions found in the literature:

* ``has0`` -- negative (< 0) vs non-negative (>= 0), all items kept;
* ``non0`` -- negative (< 0) vs positive (> 0), items whose *label* is exactly 0 removed.

A metric that is undefined on the input (Pearson r of a constant vector) is ``nan``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, mean_absolute_error,
                             precision_recall_fscore_support)

from pipeline.registry import Registry

TASK_METRICS: Registry[Callable[..., dict[str, Any]]] = Registry("task")

# Metrics where a smaller value is better; every other metric is "higher is better".
LOWER_IS_BETTER = frozenset({"mae"})

# Default dev metric for model selection, per task.
DEFAULT_SELECT_METRIC = {"classification": "weighted_f1", "regression": "mae"}


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def is_better(new: float, best: float | None, metric: str) -> bool:
    """Strict improvement (ties keep the earlier epoch); ``nan`` never improves."""
    if new != new:  # nan
        return False
    if best is None or best != best:
        return True
    return new > best if higher_is_better(metric) else new < best


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The float-valued entries of a metrics dict (drops per-class tables and matrices)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@TASK_METRICS.register("classification")
def classification_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                           label_names: Sequence[str]) -> dict[str, Any]:
    """Scores class predictions ``y_pred`` against ``y_true`` (both class indices)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    labels = list(range(len(label_names)))
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {name: {"f1": float(f1[i]), "precision": float(prec[i]), "recall": float(rec[i]),
                        "support": int(support[i])} for i, name in enumerate(label_names)}
    return {
        "n": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": per_class,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": list(label_names),
    }


def _binary(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """Accuracy and weighted F1 of two boolean vectors (``nan`` when empty)."""
    if y_true.size == 0:
        return float("nan"), float("nan")
    return (float(accuracy_score(y_true, y_pred)),
            float(f1_score(y_true, y_pred, average="weighted", zero_division=0)))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@TASK_METRICS.register("regression")
def regression_metrics(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray,
                       label_names: Sequence[str] = ()) -> dict[str, Any]:
    """Scores real-valued sentiment predictions (MOSI / MOSEI conventions, see the module docstring)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    acc2_has0, f1_has0 = _binary(y_true >= 0, y_pred >= 0)
    nonzero = y_true != 0
    acc2_non0, f1_non0 = _binary(y_true[nonzero] > 0, y_pred[nonzero] > 0)
    return {
        "n": int(y_true.size),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "corr": _pearson(y_true, y_pred),
        "acc7": float(np.mean(np.round(np.clip(y_true, -3, 3)) == np.round(np.clip(y_pred, -3, 3)))),
        "acc5": float(np.mean(np.round(np.clip(y_true, -2, 2)) == np.round(np.clip(y_pred, -2, 2)))),
        "acc2_has0": acc2_has0,
        "f1_has0": f1_has0,
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
    }


def compute_metrics(task: str, targets: np.ndarray, outputs: np.ndarray,
                    label_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of a task from raw model outputs: class scores [N, C] (argmax) or predictions [N] / [N, 1]."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2:
        outputs = outputs.argmax(axis=-1) if outputs.shape[1] > 1 else outputs[:, 0]
    return TASK_METRICS.get(task)(targets, outputs, label_names)
