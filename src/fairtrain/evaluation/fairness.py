"""Per-group metrics and disparities with Fairlearn's ``MetricFrame``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, count, selection_rate
from sklearn.metrics import accuracy_score, roc_auc_score

from fairtrain.evaluation.metrics import finite


def _rate_given(y_true: np.ndarray, y_pred: np.ndarray, actual: int) -> float:
    """P(predicted positive | true class = ``actual``); NaN when the group has no such rows.

    Fairlearn's own ``true_positive_rate`` returns 0.0 for a group without positives, which
    would report an undefined rate as a real one and inflate equalized odds.
    """
    rows = np.asarray(y_true) == actual
    return float(np.mean(np.asarray(y_pred)[rows] == 1)) if rows.any() else float("nan")


def true_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _rate_given(y_true, y_pred, 1)


def false_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _rate_given(y_true, y_pred, 0)


def false_negative_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 1.0 - true_positive_rate(y_true, y_pred)  # NaN stays NaN


GROUP_METRICS = {
    "count": count,
    "selection_rate": selection_rate,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "false_negative_rate": false_negative_rate,
    "accuracy": accuracy_score,
}
INTERSECTION = " × "


def _undefined_reasons(y_true: np.ndarray) -> dict[str, str]:
    if not (y_true == 1).any():
        return {
            name: "no positive rows in this group"
            for name in ("true_positive_rate", "false_negative_rate", "roc_auc")
        }
    if not (y_true == 0).any():
        return {name: "no negative rows in this group" for name in ("false_positive_rate", "roc_auc")}
    return {}


def _ratio(values: pd.Series) -> float | None:
    defined = values.dropna()
    if len(defined) < 2 or defined.max() <= 0:
        return None
    return float(defined.min() / defined.max())


def _spread(values: pd.Series) -> float | None:
    defined = values.dropna()
    return float(defined.max() - defined.min()) if len(defined) >= 2 else None


def _disparities(by_group: pd.DataFrame) -> dict:
    """Fairlearn's definitions over the groups where each rate is defined: demographic parity
    difference = spread of selection rates; equalized odds difference = the larger of the TPR
    and FPR spreads."""
    tpr, fpr = _spread(by_group["true_positive_rate"]), _spread(by_group["false_positive_rate"])
    defined = [v for v in (tpr, fpr) if v is not None]
    ratios = [
        r
        for r in (_ratio(by_group["true_positive_rate"]), _ratio(by_group["false_positive_rate"]))
        if r is not None
    ]
    return {
        "demographic_parity_difference": _spread(by_group["selection_rate"]),
        "equalized_odds_difference": max(defined) if defined else None,
        # Ratios as in Fairlearn (smallest over largest; 1 = parity), over defined rates.
        "demographic_parity_ratio": _ratio(by_group["selection_rate"]),
        "equalized_odds_ratio": min(ratios) if ratios else None,
    }


def group_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    sensitive: pd.Series,
    min_group_size: int,
    proba: np.ndarray | None = None,
) -> dict:
    """Metrics per group of one sensitive feature, plus the between-group disparities.

    Disparities are reported twice: over every group (``all_groups``) and over the groups with
    at least ``min_group_size`` test rows (top level, what the gates use). In a group of a few
    dozen rows one or two positives swing its TPR by tens of points, so letting such a group
    decide a gate would promote or block models on noise; it is listed in ``excluded_groups``.
    A group with a single label class gets null TPR/FNR or FPR, and null ROC-AUC, with the
    reason under ``undefined``; never a crash. ``proba`` (optional) adds ROC-AUC per group.
    """
    groups = sensitive.astype(str).to_numpy()
    frame = MetricFrame(metrics=GROUP_METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    table = frame.by_group
    by_group = {
        str(group): {name: (int(value) if name == "count" else finite(value)) for name, value in row.items()}
        for group, row in table.iterrows()
    }
    for group, row in by_group.items():
        rows = groups == group
        if proba is not None:
            defined = len(np.unique(y_true[rows])) == 2
            row["roc_auc"] = finite(roc_auc_score(y_true[rows], proba[rows])) if defined else None
        reasons = _undefined_reasons(np.asarray(y_true)[rows])
        if reasons:
            row["undefined"] = {k: v for k, v in reasons.items() if k in row}
    excluded = sorted(g for g, row in by_group.items() if row["count"] < min_group_size)
    eligible = table[~table.index.astype(str).isin(excluded)]
    return {
        "groups": by_group,
        "min_group_size": min_group_size,
        "excluded_groups": excluded,
        **_disparities(eligible),
        "all_groups": _disparities(table),
    }


def fairness_audit(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    frame: pd.DataFrame,
    sensitive_features: list[str],
    min_group_size: int,
    proba: np.ndarray | None = None,
) -> dict:
    """``group_metrics`` for every declared sensitive feature (``gated``: the promotion gates
    apply) and, with two or more, for their intersection, e.g. "sex × race" (reported, not
    gated: its cells are small, and the per-feature gates already bound each disparity)."""
    audit = {
        feature: {**group_metrics(y_true, y_pred, frame[feature], min_group_size, proba), "gated": True}
        for feature in sensitive_features
    }
    if len(sensitive_features) > 1:
        combined = frame[sensitive_features].astype(str).agg(INTERSECTION.join, axis=1)
        name = INTERSECTION.join(sensitive_features)
        audit[name] = {**group_metrics(y_true, y_pred, combined, min_group_size, proba), "gated": False}
    return audit
