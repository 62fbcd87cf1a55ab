"""Overall classification metrics and the curves DVC plots."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

from fairtrain.evaluation.calibration import brier_score, expected_calibration_error


def finite(value: float) -> float | None:
    """JSON has no NaN: undefined metrics are written as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict:
    """ROC-AUC, PR-AUC, accuracy, F1, precision, recall, log loss, Brier score and expected
    calibration error; the label-based ones at ``threshold``."""
    y_pred = (proba >= threshold).astype(int)
    two_classes = len(np.unique(y_true)) == 2
    return {
        "rows": len(y_true),
        "positive_rate": finite(np.mean(y_true)),
        "threshold": float(threshold),
        "roc_auc": finite(skm.roc_auc_score(y_true, proba)) if two_classes else None,
        "accuracy": finite(skm.accuracy_score(y_true, y_pred)),
        "f1": finite(skm.f1_score(y_true, y_pred, zero_division=0)),
        "precision": finite(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": finite(skm.recall_score(y_true, y_pred, zero_division=0)),
        "log_loss": finite(skm.log_loss(y_true, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "pr_auc": finite(skm.average_precision_score(y_true, proba)) if two_classes else None,
        "brier": finite(brier_score(y_true, proba)),
        "ece": finite(expected_calibration_error(y_true, proba)),
    }


def roc_points(y_true: np.ndarray, proba: np.ndarray) -> list[dict]:
    """ROC curve for ``dvc plots`` (intermediate collinear points dropped)."""
    fpr, tpr, thresholds = skm.roc_curve(y_true, proba, drop_intermediate=True)
    return [
        {"fpr": float(f), "tpr": float(t), "threshold": finite(th)}
        for f, t, th in zip(fpr, tpr, thresholds, strict=True)
    ]


def confusion_rows(y_true: np.ndarray, proba: np.ndarray, threshold: float, labels: list[str]) -> list[dict]:
    """One record per test row (actual, predicted class names): DVC's confusion template."""
    names = np.asarray(labels)  # index 0 = negative class, 1 = positive class
    predicted = names[(proba >= threshold).astype(int)]
    return [{"actual": a, "predicted": p} for a, p in zip(names[y_true], predicted, strict=True)]
