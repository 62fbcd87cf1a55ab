"""fairtrain.evaluation.bootstrap: the fast metrics against scikit-learn, and the intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fairtrain.evaluation import bootstrap as bs
from fairtrain.evaluation.bootstrap import bootstrap_metrics, default_metric_fns
from fairtrain.evaluation.calibration import expected_calibration_error


def _scored(n: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the probabilities, so the scores are informative and calibrated."""
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    if decimals is not None:
        p = np.round(p, decimals)  # ties, as in bootstrap resamples
    return (rng.random(n) < p).astype(np.int64), p


SKLEARN = {
    "roc_auc": lambda y, p, pred: skm.roc_auc_score(y, p),
    "pr_auc": lambda y, p, pred: skm.average_precision_score(y, p),
    "accuracy": lambda y, p, pred: skm.accuracy_score(y, pred),
    "f1": lambda y, p, pred: skm.f1_score(y, pred),
    "precision": lambda y, p, pred: skm.precision_score(y, pred),
    "recall": lambda y, p, pred: skm.recall_score(y, pred),
    # the clipping metrics.classification_metrics applies
    "log_loss": lambda y, p, pred: skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]),
    "brier": lambda y, p, pred: skm.brier_score_loss(y, p),
    "ece": lambda y, p, pred: expected_calibration_error(y, p, bins=10),
}


def test_default_metric_set():
    assert list(default_metric_fns()) == list(SKLEARN)


@pytest.mark.parametrize("name", list(SKLEARN))
@pytest.mark.parametrize(
    ("n", "seed", "decimals"), [(7, 0, 1), (200, 1, None), (3000, 2, 2), (3000, 3, None)]
)
def test_fast_metrics_equal_sklearn(name, n, seed, decimals):
    y, p = _scored(n, seed, decimals)
    if decimals == 1:
        p[0], y[0] = 0.0, 1  # a confidently wrong row exercises the log-loss clipping
    y[1] = 1 - y[2]  # both classes present
    pred = (p >= 0.5).astype(np.int64)
    assert default_metric_fns()[name](y, p, pred) == pytest.approx(SKLEARN[name](y, p, pred), abs=1e-9)


def test_fast_metrics_on_a_hand_example():
    # positives .9 .8 .3 .7 vs negatives .6 .2 .1 .4 → 14 of 16 pairs ordered (test_metrics.py)
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7])
    pred = (p >= 0.5).astype(np.int64)
    assert bs.roc_auc(y, p) == 14 / 16
    # ranked .9+ .8+ .7+ .6- .4- .3+ → AP = (1 + 1 + 1 + 4/6) / 4
    assert bs.pr_auc(y, p) == pytest.approx((3 + 4 / 6) / 4)
    assert (bs.accuracy(y, p, pred), bs.precision(y, p, pred), bs.recall(y, p, pred)) == (0.75, 0.75, 0.75)
    # a tie between a positive and a negative counts one half
    assert bs.roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_undefined_fast_metrics_are_nan_not_zero():
    y_neg, p = np.zeros(4, dtype=np.int64), np.array([0.1, 0.2, 0.3, 0.4])
    none_predicted = np.zeros(4, dtype=np.int64)
    assert math.isnan(bs.roc_auc(y_neg, p))
    assert math.isnan(bs.pr_auc(y_neg, p))
    assert math.isnan(bs.recall(y_neg, p, none_predicted))
    assert math.isnan(bs.f1(y_neg, p, none_predicted))
    assert math.isnan(bs.precision(np.array([1, 0, 1, 0]), p, none_predicted))
    assert bs.accuracy(y_neg, p, none_predicted) == 1.0


def test_intervals_contain_the_full_data_value_and_are_json():
    y, p = _scored(2000, 4)
    result = bootstrap_metrics(y, p, 0.5, default_metric_fns(), n_resamples=200, level=0.95, seed=0)
    overall = result["overall"]
    assert (overall["rows"], overall["positives"]) == (2000, int(y.sum()))
    assert "by_group" not in result
    for name, m in overall["metrics"].items():
        pred = (p >= 0.5).astype(np.int64)
        assert m["value"] == pytest.approx(SKLEARN[name](y, p, pred), abs=1e-9)
        assert m["n_valid_resamples"] == 200 and m["reason"] is None
        assert m["lower"] < m["upper"]
        # ECE is biased upward under resampling (duplicated rows add noise to every bin), so its
        # full-data value sits near, and may fall below, the lower end; the others are centred.
        if name != "ece":
            assert m["lower"] <= m["value"] <= m["upper"], name
    json.dumps(result)


def test_intervals_narrow_as_rows_grow():
    def width(n: int, name: str) -> float:
        y, p = _scored(n, 5)
        fns = {name: default_metric_fns()[name]}
        m = bootstrap_metrics(y, p, 0.5, fns, n_resamples=200, level=0.9, seed=1)["overall"]["metrics"][name]
        return m["upper"] - m["lower"]

    for name in ("roc_auc", "accuracy", "log_loss"):
        # the width shrinks like 1/√n: 16× the rows, about a quarter of the width
        assert width(4000, name) < 0.5 * width(250, name), name


def test_level_widens_the_interval():
    y, p = _scored(500, 6)
    fns = {"accuracy": bs.accuracy}
    narrow = bootstrap_metrics(y, p, 0.5, fns, 300, 0.5, seed=2)["overall"]["metrics"]["accuracy"]
    wide = bootstrap_metrics(y, p, 0.5, fns, 300, 0.99, seed=2)["overall"]["metrics"]["accuracy"]
    assert wide["lower"] < narrow["lower"] < narrow["upper"] < wide["upper"]


def test_deterministic_for_a_seed_and_overall_independent_of_groups():
    y, p = _scored(300, 7)
    groups = np.array(["a", "b", "c"] * 100)
    first = bootstrap_metrics(y, p, 0.5, default_metric_fns(), 50, 0.95, seed=3, groups=groups)
    again = bootstrap_metrics(y, p, 0.5, default_metric_fns(), 50, 0.95, seed=3, groups=groups)
    other = bootstrap_metrics(y, p, 0.5, default_metric_fns(), 50, 0.95, seed=4, groups=groups)
    plain = bootstrap_metrics(y, p, 0.5, default_metric_fns(), 50, 0.95, seed=3)
    assert first == again
    assert first["overall"] != other["overall"]
    assert first["overall"] == plain["overall"]
    # a group's interval depends on its own rows and the seed, not on the other groups
    without_c = groups != "c"
    fewer = bootstrap_metrics(
        y[without_c], p[without_c], 0.5, default_metric_fns(), 50, 0.95, seed=3, groups=groups[without_c]
    )
    assert fewer["by_group"]["a"] == first["by_group"]["a"]


def test_groups_are_resampled_within_themselves():
    # The probability encodes the group, so a metric returning the mean probability shows which
    # rows a resample held: exactly the group's own, every time, never none.
    groups = np.array(["big"] * 200 + ["tiny"] * 3 + ["mid"] * 20)
    p = np.array([0.25] * 200 + [0.75] * 3 + [0.5] * 20)  # exact in binary: means are exact
    y = np.array([0, 1] * 100 + [1, 0, 1] + [1, 0] * 10)
    fns = {"mean_proba": lambda y, p, pred: float(p.mean()), "rows": lambda y, p, pred: float(len(y))}
    result = bootstrap_metrics(y, p, 0.5, fns, n_resamples=100, level=0.95, seed=5, groups=groups)
    assert set(result["by_group"]) == {"big", "tiny", "mid"}
    for group, proba, rows in (("big", 0.25, 200), ("tiny", 0.75, 3), ("mid", 0.5, 20)):
        entry = result["by_group"][group]
        assert entry["rows"] == rows
        assert entry["metrics"]["mean_proba"] == {
            "value": proba,
            "lower": proba,
            "upper": proba,
            "n_valid_resamples": 100,
            "reason": None,
        }
        assert entry["metrics"]["rows"]["lower"] == entry["metrics"]["rows"]["upper"] == rows


def test_single_class_group_gives_no_auc_interval_and_does_not_crash():
    y, p = _scored(400, 8)
    groups = np.array(["mixed"] * 360 + ["negatives"] * 40)
    y[360:] = 0
    result = bootstrap_metrics(y, p, 0.5, default_metric_fns(), 100, 0.95, seed=6, groups=groups)
    auc = result["by_group"]["negatives"]["metrics"]["roc_auc"]
    assert auc["value"] is None and auc["lower"] is None and auc["upper"] is None
    assert auc["n_valid_resamples"] == 0
    assert "roc_auc" in auc["reason"] and "0 positive(s) and 40 negative(s)" in auc["reason"]
    accuracy = result["by_group"]["negatives"]["metrics"]["accuracy"]
    assert accuracy["lower"] is not None and accuracy["reason"] is None
    assert result["by_group"]["mixed"]["metrics"]["roc_auc"]["lower"] is not None
    json.dumps(result)


def test_a_metric_raising_value_error_skips_only_that_resample():
    # One positive in six rows: about a third of the resamples miss it. A metric that raises
    # ValueError there and the fast one returning NaN must skip exactly the same resamples.
    y = np.array([1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.1, 0.5, 0.3, 0.2, 0.95])

    def strict_auc(y_true, proba, y_pred):
        if len(np.unique(y_true)) < 2:
            raise ValueError("Only one class present in y_true")
        return skm.roc_auc_score(y_true, proba)

    fns = {"strict": strict_auc, "fast": bs.roc_auc}
    metrics = bootstrap_metrics(y, p, 0.5, fns, 300, 0.9, seed=7)["overall"]["metrics"]
    assert 0.1 * 300 <= metrics["strict"]["n_valid_resamples"] < 300
    assert metrics["strict"] == metrics["fast"]
    assert metrics["strict"]["value"] == pytest.approx(0.8)  # positive above 4 of 5 negatives


def test_too_few_valid_resamples_give_no_interval_with_the_error():
    # Defined only when a resample of 5 rows draws 5 different rows: 5!/5^5 ≈ 3.8% of the time.
    def distinct_rows(y_true, proba, y_pred):
        if len(np.unique(proba)) < len(proba):
            raise ValueError("repeated rows")
        return 1.0

    p = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    y = np.array([0, 0, 1, 1, 1])
    m = bootstrap_metrics(y, p, 0.5, {"distinct": distinct_rows}, 500, 0.95, seed=8)["overall"]["metrics"]
    m = m["distinct"]
    assert m["value"] == 1.0  # the full data are all distinct
    assert 0 < m["n_valid_resamples"] < 50
    assert m["lower"] is None and m["upper"] is None
    assert "at least 50 needed" in m["reason"] and "repeated rows" in m["reason"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_resamples": 0}, "n_resamples"),
        ({"level": 1.0}, "level"),
        ({"metric_fns": {}}, "metric_fns"),
        ({"groups": np.array(["a", "b"])}, "groups has 2 rows"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    y, p = _scored(10, 9)
    arguments = {"metric_fns": {"accuracy": bs.accuracy}, "n_resamples": 10, "level": 0.9, "seed": 0}
    with pytest.raises(ValueError, match=message):
        bootstrap_metrics(y, p, 0.5, **{**arguments, **kwargs})
