"""Calibration of predicted probabilities: Brier score, expected calibration error and the
points of a reliability (calibration) plot.

Bins are equal-width over [0, 1]: bin k of B holds probabilities in [k/B, (k+1)/B), and the
last bin also holds 1.0. A probability exactly on an edge goes to the upper bin, the same way
``proba >= threshold`` counts as a positive prediction everywhere else in the pipeline.
(scikit-learn's ``calibration_curve`` sends edge values down instead; the two differ only for
probabilities that fall exactly on an edge.)
"""

from __future__ import annotations

import numpy as np


def binary_scores(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a label vector and a probability vector; return them as int64 0/1 and float64.

    Labels may arrive as float32 0/1 (``target_vector``) or bool. Raises ValueError for
    different lengths, no rows, labels other than 0/1, or probabilities outside [0, 1] or NaN,
    since every metric here would silently give a wrong number for them.
    """
    y = np.asarray(y_true).ravel()
    p = np.asarray(proba, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} rows but proba has {len(p)}")
    if len(y) == 0:
        raise ValueError("no rows: metrics are undefined on an empty set")
    if not ((y == 0) | (y == 1)).all():
        raise ValueError(f"y_true must hold only 0 and 1, got values {np.unique(y)[:10].tolist()}")
    if not (p.min() >= 0.0 and p.max() <= 1.0):  # also False when p holds NaN
        raise ValueError("proba must hold probabilities in [0, 1] (no NaN)")
    return y.astype(np.int64), p


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")


def _bin_stats(y: np.ndarray, p: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: row count, sum of probabilities, number of positives (all of length ``bins``)."""
    index = np.minimum((p * bins).astype(np.int64), bins - 1)  # floor, as p ≥ 0
    # p * B can round across an edge (0.29 * 100 = 28.999…): correct against the exact edges k/B
    # so that a probability equal to an edge lands in the upper bin. (searchsorted does this
    # directly but is ~7× slower, and ECE runs once per bootstrap resample.)
    edges = np.arange(bins + 1) / bins
    index += (p >= edges[index + 1]) & (index < bins - 1)
    index -= p < edges[index]
    counts = np.bincount(index, minlength=bins)
    sum_proba = np.bincount(index, weights=p, minlength=bins)
    positives = np.bincount(index[y == 1], minlength=bins)  # integer counts: faster than weights=y
    return counts, sum_proba, positives


def brier_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean squared difference between the predicted probability and the 0/1 outcome.

    0 is perfect; always predicting the base rate r scores r(1 - r). Lower is better.
    """
    y, p = binary_scores(y_true, proba)
    return float(np.mean((p - y) ** 2))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """ECE = Σ_k (n_k / n) · |mean predicted probability in bin k − observed positive rate in bin k|.

    Equal-width bins over [0, 1] (see the module docstring for edges); empty bins contribute
    nothing. It is 0 when, within every bin, the average prediction equals the fraction of
    positives, and at most 1. Lower is better. It depends on ``bins``: compare ECEs only at the
    same number of bins.
    """
    _check_bins(bins)
    y, p = binary_scores(y_true, proba)
    _, sum_proba, positives = _bin_stats(y, p, bins)
    # Σ_k (n_k/n)·|Σp_k/n_k − pos_k/n_k| = Σ_k |Σp_k − pos_k| / n: no division by empty bins.
    return float(np.sum(np.abs(sum_proba - positives)) / len(y))


def calibration_curve_points(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict]:
    """One record per non-empty bin, in increasing order, for a reliability plot.

    Each record: ``bin`` (index), ``lower`` / ``upper`` (bin edges), ``mean_predicted`` (x),
    ``observed_rate`` (y: fraction of positives), ``count`` (rows in the bin). A perfectly
    calibrated model's points lie on the diagonal.
    """
    _check_bins(bins)
    y, p = binary_scores(y_true, proba)
    counts, sum_proba, positives = _bin_stats(y, p, bins)
    return [
        {
            "bin": int(k),
            "lower": float(k / bins),
            "upper": float((k + 1) / bins),
            "mean_predicted": float(sum_proba[k] / counts[k]),
            "observed_rate": float(positives[k] / counts[k]),
            "count": int(counts[k]),
        }
        for k in np.flatnonzero(counts)
    ]
