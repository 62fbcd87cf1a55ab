"""Per-group metrics and disparities with Fairlearn's ``MetricFrame``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score

from fairtrain.evaluation.metrics import finite

GROUP_METRICS = {
    "count": count,
    "selection_rate": selection_rate,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "accuracy": accuracy_score,
}


def _disparities(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict:
    if len(np.unique(groups)) < 2:
        return {"demographic_parity_difference": None, "equalized_odds_difference": None}
    return {
        "demographic_parity_difference": finite(
            demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
        ),
        "equalized_odds_difference": finite(
            equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
        ),
    }


def group_metrics(y_true: np.ndarray, y_pred: np.ndarray, sensitive: pd.Series, min_group_size: int) -> dict:
    """Metrics per group of one sensitive feature, plus the between-group disparities.

    Disparities are reported twice: over every group (``all_groups``) and over the groups with
    at least ``min_group_size`` test rows (top level, what the gates use). In a group of a few
    dozen rows one or two positives swing its TPR by tens of points, so letting such a group
    decide a gate would promote or block models on noise; it is listed in ``excluded_groups``.
    A group with a single label class gets null TPR or FPR (undefined), never a crash.
    """
    groups = sensitive.astype(str).to_numpy()
    frame = MetricFrame(metrics=GROUP_METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    by_group = {
        str(group): {name: (int(value) if name == "count" else finite(value)) for name, value in row.items()}
        for group, row in frame.by_group.iterrows()
    }
    excluded = sorted(g for g, row in by_group.items() if row["count"] < min_group_size)
    eligible = ~np.isin(groups, excluded)
    return {
        "groups": by_group,
        "min_group_size": min_group_size,
        "excluded_groups": excluded,
        **_disparities(y_true[eligible], y_pred[eligible], groups[eligible]),
        "all_groups": _disparities(y_true, y_pred, groups),
    }


def fairness_audit(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    frame: pd.DataFrame,
    sensitive_features: list[str],
    min_group_size: int,
) -> dict:
    """``group_metrics`` for every declared sensitive feature."""
    return {
        feature: group_metrics(y_true, y_pred, frame[feature], min_group_size)
        for feature in sensitive_features
    }
