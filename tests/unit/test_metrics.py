"""fairtrain.evaluation.metrics on arrays small enough to check by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fairtrain.evaluation.metrics import classification_metrics, confusion_rows, finite, roc_points

# threshold 0.5 → y_pred = [1, 1, 0, 1, 0, 0, 0, 1]: TP = 3 (rows 0, 1, 7), FN = 1 (row 2),
# FP = 1 (row 3), TN = 3. Positive scores {.9, .8, .3, .7} beat negatives {.6, .2, .1, .4}
# in 4 + 4 + 2 + 4 = 14 of 16 pairs → ROC-AUC 0.875.
Y_TRUE = np.array([1, 1, 1, 0, 0, 0, 0, 1])
PROBA = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7])


def test_classification_metrics_by_hand():
    result = classification_metrics(Y_TRUE, PROBA, threshold=0.5)
    assert result["rows"] == 8
    assert result["positive_rate"] == 0.5
    assert result["threshold"] == 0.5
    assert result["accuracy"] == 6 / 8
    assert result["precision"] == 3 / 4
    assert result["recall"] == 3 / 4
    assert result["f1"] == pytest.approx(3 / 4)
    assert result["roc_auc"] == pytest.approx(14 / 16)
    expected_log_loss = -np.mean(Y_TRUE * np.log(PROBA) + (1 - Y_TRUE) * np.log(1 - PROBA))
    assert result["log_loss"] == pytest.approx(expected_log_loss)
    json.dumps(result)  # plain floats, no numpy scalars


def test_threshold_moves_precision_and_recall():
    result = classification_metrics(Y_TRUE, PROBA, threshold=0.75)
    # y_pred = [1, 1, 0, 0, 0, 0, 0, 0]: TP = 2, FP = 0, FN = 2
    assert result["precision"] == 1.0
    assert result["recall"] == 0.5
    assert result["accuracy"] == 6 / 8
    assert result["roc_auc"] == pytest.approx(14 / 16)  # threshold-free


def test_probability_equal_to_threshold_is_positive():
    result = classification_metrics(np.array([1, 0]), np.array([0.5, 0.2]), threshold=0.5)
    assert result["recall"] == 1.0
    assert result["accuracy"] == 1.0


def test_single_class_gives_null_auc_not_nan():
    result = classification_metrics(np.array([0, 0, 0]), np.array([0.1, 0.7, 0.2]), threshold=0.5)
    assert result["roc_auc"] is None
    assert result["precision"] == 0.0  # zero_division=0, no warning turned error
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert math.isfinite(result["log_loss"])


def test_finite_maps_nan_and_inf_to_none():
    assert finite(float("nan")) is None
    assert finite(float("inf")) is None
    assert finite(np.float32(0.25)) == 0.25
    assert isinstance(finite(np.float64(1.0)), float)


def test_roc_points_run_from_origin_to_one_one():
    points = roc_points(Y_TRUE, PROBA)
    assert (points[0]["fpr"], points[0]["tpr"]) == (0.0, 0.0)
    assert (points[-1]["fpr"], points[-1]["tpr"]) == (1.0, 1.0)
    assert points[0]["threshold"] is None  # sklearn's +inf start, written as JSON null
    fprs = [p["fpr"] for p in points]
    tprs = [p["tpr"] for p in points]
    assert fprs == sorted(fprs) and tprs == sorted(tprs)
    # area under the points equals the AUC
    assert np.trapezoid(tprs, fprs) == pytest.approx(14 / 16)
    json.dumps(points)


def test_confusion_rows_use_class_names():
    rows = confusion_rows(
        np.array([1, 0, 1, 0]), np.array([0.9, 0.7, 0.1, 0.2]), threshold=0.5, labels=["<=50K", ">50K"]
    )
    assert rows == [
        {"actual": ">50K", "predicted": ">50K"},
        {"actual": "<=50K", "predicted": ">50K"},
        {"actual": ">50K", "predicted": "<=50K"},
        {"actual": "<=50K", "predicted": "<=50K"},
    ]
    json.dumps(rows)
