"""Apply a mitigation rule written by ``evaluation.mitigation`` (numpy only: the served model
imports this, and serving does not install Fairlearn or scikit-learn)."""

from __future__ import annotations

import numpy as np


def _threshold(value: float | str) -> float:
    return float(value)  # float("inf") / float("-inf") parse the strings back


def _apply_operation(operation: dict, scores: np.ndarray) -> np.ndarray:
    threshold = _threshold(operation["threshold"])
    if operation["operator"] == ">":
        return scores > threshold
    if operation["operator"] == "<":
        return scores < threshold
    raise ValueError(f"mitigation rule: unknown operator {operation['operator']!r} (expected '>' or '<')")


def positive_probability(rule: dict, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """P(positive decision) per row under the rule; NaN for groups the rule does not know."""
    labels = np.asarray(groups).astype(str)
    result = np.full(len(scores), np.nan)
    for group, part in rule["groups"].items():
        rows = labels == group
        mixed = part["p0"] * _apply_operation(part["operation0"], scores[rows]) + part[
            "p1"
        ] * _apply_operation(part["operation1"], scores[rows])
        result[rows] = part["p_ignore"] * part["prediction_constant"] + (1 - part["p_ignore"]) * mixed
    return result


def apply_rule(rule: dict, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """0/1 decisions under the rule, seeded as ``ThresholdOptimizer.predict(random_state=seed)``."""
    scores = np.asarray(scores, dtype=np.float64)
    chance = positive_probability(rule, scores, groups)
    draws = np.random.RandomState(rule["seed"]).rand(len(scores))
    unknown = np.isnan(chance)
    decided = np.where(unknown, scores >= rule["fallback_threshold"], chance >= draws)
    return decided.astype(np.int64)
