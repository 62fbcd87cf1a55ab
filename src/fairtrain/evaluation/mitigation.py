"""Post-processing mitigation: Fairlearn's ``ThresholdOptimizer`` over the trained network.

The optimizer is fitted on the validation split (``prefit=True``: the network is not
retrained) and picks, per group of one sensitive feature, a randomised mix of two thresholds on
the positive-class probability that satisfies the constraint (equalized odds or demographic
parity) at the best objective. Its solution is written out as a plain JSON *rule*:

    {"constraint", "objective", "sensitive_feature", "seed", "fallback_threshold",
     "groups": {group: {"p0", "operation0": {"operator", "threshold"},
                        "p1", "operation1": {...}, "p_ignore", "prediction_constant"}}}

(thresholds ±inf are written as the strings "inf" / "-inf"). ``apply_rule`` reproduces
Fairlearn's decision exactly: P(positive | row) = p0·op0(score) + p1·op1(score), mixed with
``prediction_constant`` at ``p_ignore``, then positive when that probability ≥ a uniform draw
from ``numpy.random.RandomState(seed)`` — the same draws ``ThresholdOptimizer.predict(...,
random_state=seed)`` makes, so the registered model serves the same decisions on the same rows
in the same order. A row's decision therefore depends on its position in the batch; what is
fixed is each group's rate of positive decisions. Rows of a group the optimizer never saw fall
back to the plain decision threshold (Fairlearn itself would predict 0 for them).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin

from fairtrain.config import MitigationConfig
from fairtrain.evaluation.decision_rule import apply_rule, positive_probability  # noqa: F401 (re-export)
from fairtrain.evaluation.fairness import fairness_audit


class TorchProbabilityClassifier(ClassifierMixin, BaseEstimator):
    """A fitted scikit-learn face for the trained network: ``predict_proba`` on transformed
    features (the numpy matrix the preprocessor produces). ``fit`` is never needed."""

    def __init__(self, network=None) -> None:
        self.network = network

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def fit(self, X, y=None):
        return self

    def predict_proba(self, X) -> np.ndarray:
        features = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        positive = self.network.predict_proba(features).numpy().astype(np.float64)
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


def fit_optimizer(
    network, features: np.ndarray, y_true: np.ndarray, groups: np.ndarray, settings: MitigationConfig
) -> ThresholdOptimizer:
    optimizer = ThresholdOptimizer(
        estimator=TorchProbabilityClassifier(network),
        constraints=settings.constraint,
        objective=settings.objective,
        grid_size=settings.grid_size,
        prefit=True,
        predict_method="predict_proba",
    )
    return optimizer.fit(features, y_true, sensitive_features=groups)


def _number(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _operation(operation) -> dict:
    return {"operator": operation.operator, "threshold": _number(operation.threshold)}


def rule_from_optimizer(
    optimizer: ThresholdOptimizer, settings: MitigationConfig, feature: str, fallback_threshold: float
) -> dict:
    """The fitted solution as JSON data (see the module docstring); no pickled objects."""
    groups = {}
    for group, part in optimizer.interpolated_thresholder_.interpolation_dict.items():
        groups[str(group)] = {
            "p0": float(part.p0),
            "operation0": _operation(part.operation0),
            "p1": float(part.p1),
            "operation1": _operation(part.operation1),
            "p_ignore": float(part.get("p_ignore", 0.0)),
            "prediction_constant": float(part.get("prediction_constant", 0.0)),
        }
    return {
        "method": "fairlearn.postprocessing.ThresholdOptimizer (prefit, predict_proba)",
        "constraint": settings.constraint,
        "objective": settings.objective,
        "sensitive_feature": feature,
        "seed": settings.seed,
        "fallback_threshold": float(fallback_threshold),
        "groups": groups,
    }


def _summary(audit: dict, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "selection_rate": float(np.mean(y_pred)),
        "fairness": {
            feature: {
                "demographic_parity_difference": a["demographic_parity_difference"],
                "equalized_odds_difference": a["equalized_odds_difference"],
                "groups": {
                    g: {
                        k: row.get(k)
                        for k in (
                            "count",
                            "accuracy",
                            "selection_rate",
                            "true_positive_rate",
                            "false_positive_rate",
                        )
                    }
                    for g, row in a["groups"].items()
                },
            }
            for feature, a in audit.items()
        },
    }


def compare(
    y_true: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    frame: pd.DataFrame,
    features: list[str],
    min_group_size: int,
) -> tuple[dict, dict]:
    """Side-by-side accuracy, selection rate, DPD, EOD and per-group rates before and after;
    also returns the full audit of the mitigated decisions (what the gates then judge)."""
    audit_before = fairness_audit(y_true, before, frame, features, min_group_size)
    audit_after = fairness_audit(y_true, after, frame, features, min_group_size)
    return {
        "before": _summary(audit_before, y_true, before),
        "after": _summary(audit_after, y_true, after),
    }, audit_after
