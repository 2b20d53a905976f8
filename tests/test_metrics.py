"""Metrics against values worked out by hand on tiny arrays (the arithmetic is in the comments)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import (classification_metrics, compute_metrics, higher_is_better, is_better,
                              regression_metrics, scalar_metrics)

# true  : a a a b b c
# pred  : a a b b c c
# a: TP 2 FP 0 FN 1 -> P 1,   R 2/3, F1 0.8
# b: TP 1 FP 1 FN 1 -> P 1/2, R 1/2, F1 0.5
# c: TP 1 FP 1 FN 0 -> P 1/2, R 1,   F1 2/3
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_classification_by_hand() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)  # 0.67778
    assert m["per_class"]["a"] == pytest.approx({"f1": 0.8, "precision": 1.0, "recall": 2 / 3, "support": 3})
    assert m["per_class"]["b"] == pytest.approx({"f1": 0.5, "precision": 0.5, "recall": 0.5, "support": 2})
    assert m["per_class"]["c"] == pytest.approx({"f1": 2 / 3, "precision": 0.5, "recall": 1.0, "support": 1})
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["n"] == 6 and m["labels"] == ["a", "b", "c"]


def test_absent_class_counts_in_macro_and_confusion() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3 + 0.0) / 4)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)  # support 0 weighs nothing
    assert m["per_class"]["d"]["support"] == 0
    assert len(m["confusion"]) == 4 and all(len(r) == 4 for r in m["confusion"])


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], [0], ["a", "b"])


# true: -2.4 -0.6 0.0  0.0 1.4 3.6
# pred: -1.6  0.3 0.2 -0.1 1.6 2.4
Y_REG = [-2.4, -0.6, 0.0, 0.0, 1.4, 3.6]
P_REG = [-1.6, 0.3, 0.2, -0.1, 1.6, 2.4]


def test_regression_by_hand() -> None:
    m = regression_metrics(Y_REG, P_REG)
    assert m["mae"] == pytest.approx((0.8 + 0.9 + 0.2 + 0.1 + 0.2 + 1.2) / 6)  # 0.56667
    # Acc7: round(clip(.,-3,3)): true -2 -1 0 0 1 3, pred -2 0 0 0 2 2 -> 3 of 6 agree
    assert m["acc7"] == pytest.approx(3 / 6)
    # Acc5: round(clip(.,-2,2)): true -2 -1 0 0 1 2, pred -2 0 0 0 2 2 -> 4 of 6 agree
    assert m["acc5"] == pytest.approx(4 / 6)
    # has0 (>= 0 is positive): true F F T T T T, pred F T T F T T -> 4/6;
    # neg: TP1 FP1 FN1 -> F1 .5 (support 2); pos: TP3 FP1 FN1 -> F1 .75 (support 4)
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    assert m["f1_has0"] == pytest.approx((2 * 0.5 + 4 * 0.75) / 6)
    # non0 (zero labels dropped): true F F T T, pred F T T T -> 3/4;
    # neg: P 1 R .5 F1 2/3; pos: P 2/3 R 1 F1 .8; both support 2
    assert m["acc2_non0"] == pytest.approx(3 / 4)
    assert m["f1_non0"] == pytest.approx((2 / 3 + 0.8) / 2)
    # Pearson r from the centred sums: 13.60667 / sqrt(20.37333 * 9.71333)
    assert m["corr"] == pytest.approx(0.96725, abs=1e-4)
    assert m["n"] == 6


def test_regression_edge_cases() -> None:
    m = regression_metrics([0.0, 0.0, 1.0], [0.5, 0.5, 0.5])
    assert math.isnan(m["corr"])  # constant predictions
    assert m["acc2_non0"] == 1.0  # only the item labelled 1.0 is kept, predicted positive
    only_zero = regression_metrics([0.0, 0.0], [1.0, -1.0])
    assert math.isnan(only_zero["acc2_non0"]) and only_zero["acc2_has0"] == 0.5


def test_compute_metrics_takes_argmax_of_scores() -> None:
    scores = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 0.5]])
    m = compute_metrics("classification", np.array([0, 1, 2]), scores, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    r = compute_metrics("regression", np.array([1.0, -1.0]), np.array([[0.5], [-0.25]]), [])
    assert r["mae"] == pytest.approx(0.625)
    with pytest.raises(KeyError, match="unknown task"):
        compute_metrics("ranking", np.array([1]), np.array([1]), [])


def test_selection_direction() -> None:
    assert higher_is_better("weighted_f1") and not higher_is_better("mae")
    assert is_better(0.6, 0.5, "weighted_f1") and not is_better(0.5, 0.5, "weighted_f1")
    assert is_better(0.4, 0.5, "mae") and not is_better(0.6, 0.5, "mae")
    assert is_better(0.1, None, "mae") and not is_better(float("nan"), 0.5, "mae")
    assert scalar_metrics({"a": 1.0, "n": 3, "per_class": {}, "confusion": [[1]]}) == {"a": 1.0, "n": 3.0}
