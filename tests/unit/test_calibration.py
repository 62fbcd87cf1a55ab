"""fairtrain.evaluation.calibration on examples small enough to check by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from fairtrain.evaluation.calibration import (
    binary_scores,
    brier_score,
    calibration_curve_points,
    expected_calibration_error,
)

# bins=2. Bin 0 ([0, .5)): p .1 .2 .3, y 0 0 1 → mean predicted .2, observed 1/3, gap 2/15.
# Bin 1 ([.5, 1]): p .9, y 0 → mean .9, observed 0, gap .9.
# ECE = 3/4 · 2/15 + 1/4 · .9 = .1 + .225 = .325
Y_TRUE = np.array([0, 0, 1, 0])
PROBA = np.array([0.1, 0.2, 0.3, 0.9])


def test_brier_score_by_hand():
    # squared errors .01 .04 .49 .81 → mean 1.35 / 4
    assert brier_score(Y_TRUE, PROBA) == pytest.approx(1.35 / 4)
    assert brier_score(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_brier_score_matches_sklearn():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_ece_two_bins_by_hand():
    assert expected_calibration_error(Y_TRUE, PROBA, bins=2) == pytest.approx(0.325)


def test_ece_of_perfectly_calibrated_bins_is_zero():
    # p = .25 on four rows with one positive, .75 on four rows with three positives.
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.0, abs=1e-12)
    # the base rate predicted for everyone is calibrated too, whatever the bins
    assert expected_calibration_error(y, np.full(8, 0.5), bins=3) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_confidently_wrong_predictions_is_one():
    assert expected_calibration_error(np.array([0, 1]), np.array([1.0, 0.0])) == 1.0


def test_edge_probabilities_go_to_the_upper_bin():
    # .5 with two bins belongs to [.5, 1]; 1.0 to the last bin; .29 × 100 rounds to 28.999…
    # in floating point but .29 is the lower edge of bin 29 of 100.
    points = calibration_curve_points(np.array([1, 0]), np.array([0.5, 0.2]), bins=2)
    assert [(pt["bin"], pt["count"]) for pt in points] == [(0, 1), (1, 1)]
    assert calibration_curve_points(np.array([1]), np.array([1.0]), bins=4)[0]["bin"] == 3
    assert calibration_curve_points(np.array([1]), np.array([0.29]), bins=100)[0]["bin"] == 29


def test_calibration_curve_points_by_hand():
    points = calibration_curve_points(Y_TRUE, PROBA, bins=2)
    assert points == [
        {
            "bin": 0,
            "lower": 0.0,
            "upper": 0.5,
            "mean_predicted": pytest.approx(0.2),
            "observed_rate": pytest.approx(1 / 3),
            "count": 3,
        },
        {"bin": 1, "lower": 0.5, "upper": 1.0, "mean_predicted": 0.9, "observed_rate": 0.0, "count": 1},
    ]
    json.dumps(points)


def test_calibration_curve_skips_empty_bins_and_matches_sklearn():
    rng = np.random.default_rng(1)
    p = rng.random(300) * 0.6  # nothing above .6: bins 6–9 of 10 are empty
    y = (rng.random(300) < p).astype(int)
    points = calibration_curve_points(y, p, bins=10)
    assert [pt["bin"] for pt in points] == list(range(6))
    assert sum(pt["count"] for pt in points) == 300
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose([pt["observed_rate"] for pt in points], observed, atol=1e-12)
    np.testing.assert_allclose([pt["mean_predicted"] for pt in points], predicted, atol=1e-12)
    # ECE is the count-weighted mean gap of these same points
    gaps = sum(pt["count"] * abs(pt["mean_predicted"] - pt["observed_rate"]) for pt in points) / 300
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(gaps)


def test_binary_scores_accepts_float_labels():
    y, p = binary_scores(np.array([1.0, 0.0], dtype=np.float32), [0.3, 0.6])
    assert y.dtype == np.int64 and y.tolist() == [1, 0]
    assert p.dtype == np.float64


@pytest.mark.parametrize(
    ("y_true", "proba", "message"),
    [
        ([0, 1], [0.5], "rows"),
        ([], [], "no rows"),
        ([0, 2], [0.1, 0.2], "only 0 and 1"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        ([0, 1], [0.1, float("nan")], r"\[0, 1\]"),
    ],
)
def test_invalid_inputs_raise(y_true, proba, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(np.array(y_true), np.array(proba))


@pytest.mark.parametrize("bins", [0, -1, 2.5, True])
def test_invalid_bins_raise(bins):
    with pytest.raises(ValueError, match="bins"):
        calibration_curve_points(Y_TRUE, PROBA, bins=bins)
