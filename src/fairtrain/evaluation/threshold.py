"""Choosing the decision threshold by a rule, on the validation split.

The threshold must be chosen on validation rows, never on the test rows it is then evaluated
on: a threshold tuned on the test split makes its test precision/recall optimistic.

A row is predicted positive when ``proba >= threshold`` (as in ``metrics.py``). Data-driven
rules only consider thresholds equal to one of the given probabilities: any threshold between
two consecutive distinct probabilities makes the same predictions as the upper one, so these
are all the distinct outcomes there are.
"""

from __future__ import annotations

import numpy as np

from fairtrain.evaluation.calibration import binary_scores
from fairtrain.evaluation.metrics import finite

RULES = ("fixed", "max_f1", "target_precision", "target_recall")
DEFAULT_FIXED_THRESHOLD = 0.5


def _rates_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Precision, recall and F1 of ``p >= threshold``; None where undefined (0/0)."""
    pred = p >= threshold
    tp = int(np.count_nonzero(pred & (y == 1)))
    predicted, actual = int(np.count_nonzero(pred)), int(np.count_nonzero(y))
    nan = float("nan")
    return {
        "precision": finite(tp / predicted if predicted else nan),
        "recall": finite(tp / actual if actual else nan),
        "f1": finite(2 * tp / (predicted + actual) if predicted + actual else nan),
    }


def _curve(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 at every distinct probability, thresholds in decreasing order."""
    order = np.argsort(-p, kind="stable")
    sorted_p, sorted_y = p[order], y[order]
    # Last row of each run of equal probabilities: predictions change only between runs.
    ends = np.flatnonzero(np.r_[sorted_p[1:] != sorted_p[:-1], True])
    tp = np.cumsum(sorted_y)[ends]
    predicted = ends + 1
    positives = int(sorted_y.sum())
    return {
        "threshold": sorted_p[ends],
        "precision": tp / predicted,
        "recall": tp / positives,
        "f1": 2 * tp / (predicted + positives),
    }


def _check_target(rule: str, target: float | None) -> float:
    if target is None:
        raise ValueError(f"rule {rule!r} needs a target in (0, 1]")
    target = float(target)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"rule {rule!r}: target must be in (0, 1], got {target}")
    return target


def _unreachable(rule: str, metric: str, target: float, values: np.ndarray, curve: dict) -> ValueError:
    best = int(np.argmax(values))
    return ValueError(
        f"rule {rule!r}: no threshold reaches {metric} >= {target} on these rows (all "
        f"{len(values)} distinct probabilities tried as thresholds); the best achievable {metric} is "
        f"{values[best]:.4f} (at threshold {curve['threshold'][best]:.4f})"
    )


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, rule: str, target: float | None = None) -> dict:
    """Pick a decision threshold on (validation) labels and probabilities by ``rule``.

    Rules:
      - ``fixed``: ``target`` itself (0.5 when None), in [0, 1]; the data only fill ``achieved``.
      - ``max_f1``: the threshold with the highest F1; ties go to the highest threshold (fewest
        positive predictions). Takes no target.
      - ``target_precision``: the smallest threshold whose precision is ≥ target; precision is
        not monotone in the threshold, but recall is, so this one has the highest recall among
        all thresholds meeting the target.
      - ``target_recall``: the largest threshold whose recall is ≥ target (the most precise
        way to reach that recall, since fewer rows are predicted positive).

    Returns ``{"rule", "target", "threshold", "achieved": {"precision", "recall", "f1"}}`` with
    plain floats (None where undefined), ``achieved`` measured on the rows given. Raises
    ValueError for an unknown rule, a missing or out-of-range target, labels without a
    positive (data-driven rules), or a target no threshold reaches — the message names the
    rule, the target and the best achievable value.
    """
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; expected one of {', '.join(RULES)}")
    y, p = binary_scores(y_true, proba)

    if rule == "fixed":
        threshold = DEFAULT_FIXED_THRESHOLD if target is None else float(target)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"rule 'fixed': threshold must be in [0, 1], got {threshold}")
        return {
            "rule": rule,
            "target": threshold,
            "threshold": threshold,
            "achieved": _rates_at(y, p, threshold),
        }

    if rule == "max_f1" and target is not None:
        raise ValueError(f"rule 'max_f1' takes no target (got {target})")
    if rule != "max_f1":
        target = _check_target(rule, target)
    if not y.any():
        raise ValueError(f"rule {rule!r}: the labels have no positive row, so precision/recall are undefined")

    curve = _curve(y, p)
    if rule == "max_f1":
        chosen = int(np.argmax(curve["f1"]))  # first maximum = highest threshold among ties
    else:
        metric = "precision" if rule == "target_precision" else "recall"
        meets = np.flatnonzero(curve[metric] >= target)
        if len(meets) == 0:
            raise _unreachable(rule, metric, target, curve[metric], curve)
        # Thresholds run from high to low: the last index is the smallest threshold.
        chosen = int(meets[-1] if rule == "target_precision" else meets[0])

    threshold = float(curve["threshold"][chosen])
    return {"rule": rule, "target": target, "threshold": threshold, "achieved": _rates_at(y, p, threshold)}
