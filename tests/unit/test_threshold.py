"""fairtrain.evaluation.threshold.choose_threshold on an example worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fairtrain.evaluation.threshold import choose_threshold

# Three positives. Predicting p >= t, at each distinct probability (high to low):
#   t    TP  predicted  precision  recall  F1 = 2TP / (predicted + 3)
#   .9   1   1          1          1/3     2/4 = .5
#   .8   2   2          1          2/3     4/5 = .8
#   .7   2   3          2/3        2/3     4/6
#   .6   3   4          3/4        1       6/7  ← max F1
#   .4   3   5          3/5        1       6/8
#   .2   3   6          1/2        1       6/9
Y_TRUE = np.array([1, 1, 0, 1, 0, 0])
PROBA = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.2])


def test_max_f1_by_hand():
    result = choose_threshold(Y_TRUE, PROBA, "max_f1")
    assert result == {
        "rule": "max_f1",
        "target": None,
        "threshold": 0.6,
        "achieved": {"precision": 0.75, "recall": 1.0, "f1": pytest.approx(6 / 7)},
    }
    json.dumps(result)


def test_max_f1_ties_go_to_the_highest_threshold():
    # Two positives. t = .9: TP 1 of 1 predicted, F1 2/(1 + 2) = 2/3; t = .3: TP 2 of 4 predicted,
    # F1 4/(4 + 2) = 2/3 as well; t = .1: 4/7. The higher of the tied thresholds wins.
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.3, 0.3, 0.1])
    assert choose_threshold(y, p, "max_f1")["threshold"] == 0.9
    # with ties in probability the threshold is one of the probabilities, and ties move together
    result = choose_threshold(np.array([1, 0, 1, 0]), np.array([0.7, 0.7, 0.3, 0.3]), "max_f1")
    assert result["threshold"] == 0.3
    assert result["achieved"]["f1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("target", "threshold", "recall"),
    [
        (0.75, 0.6, 1.0),  # .6 itself reaches 3/4: the smallest threshold, full recall
        (0.76, 0.8, 2 / 3),  # .6 falls short; .7 (2/3) too; .8 is the smallest that reaches it
        (0.6, 0.4, 1.0),
        (1.0, 0.8, 2 / 3),
    ],
)
def test_target_precision_picks_the_smallest_threshold_that_reaches_it(target, threshold, recall):
    result = choose_threshold(Y_TRUE, PROBA, "target_precision", target)
    assert result["rule"] == "target_precision"
    assert result["target"] == target
    assert result["threshold"] == threshold
    assert result["achieved"]["recall"] == pytest.approx(recall)
    assert result["achieved"]["precision"] >= target


@pytest.mark.parametrize(
    ("target", "threshold"), [(1 / 3, 0.9), (0.5, 0.8), (2 / 3, 0.8), (0.9, 0.6), (1.0, 0.6)]
)
def test_target_recall_picks_the_largest_threshold_that_reaches_it(target, threshold):
    result = choose_threshold(Y_TRUE, PROBA, "target_recall", target)
    assert result["threshold"] == threshold
    assert result["achieved"]["recall"] >= target


def test_unreachable_precision_names_rule_target_and_best_value():
    # precision at .9, .8, .3, .2 = 0, 1/2, 1/3, 1/2 → at most .5
    y = np.array([0, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.2])
    with pytest.raises(ValueError, match=r"target_precision.*0\.6.*best achievable precision is 0\.5000"):
        choose_threshold(y, p, "target_precision", 0.6)


def test_fixed_uses_the_target_or_half():
    default = choose_threshold(Y_TRUE, PROBA, "fixed")
    assert default["threshold"] == 0.5 and default["target"] == 0.5
    assert default["achieved"] == {"precision": 0.75, "recall": 1.0, "f1": pytest.approx(6 / 7)}
    high = choose_threshold(Y_TRUE, PROBA, "fixed", 0.85)
    assert high["threshold"] == 0.85
    assert high["achieved"] == {"precision": 1.0, "recall": pytest.approx(1 / 3), "f1": 0.5}
    # nobody predicted positive: precision is undefined, written as None
    assert choose_threshold(Y_TRUE, PROBA, "fixed", 0.95)["achieved"]["precision"] is None


def test_rules_hold_on_random_data():
    rng = np.random.default_rng(3)
    p = np.round(rng.random(400), 2)  # many ties
    y = (rng.random(400) < p).astype(int)
    distinct = np.unique(p)

    def precision_at(t):
        return y[p >= t].mean()

    def recall_at(t):
        return y[p >= t].sum() / y.sum()

    chosen = choose_threshold(y, p, "target_precision", 0.8)["threshold"]
    assert precision_at(chosen) >= 0.8
    assert all(precision_at(t) < 0.8 for t in distinct[distinct < chosen])
    chosen = choose_threshold(y, p, "target_recall", 0.9)["threshold"]
    assert recall_at(chosen) >= 0.9
    assert all(recall_at(t) < 0.9 for t in distinct[distinct > chosen])
    best = choose_threshold(y, p, "max_f1")
    f1s = [2 * y[p >= t].sum() / ((p >= t).sum() + y.sum()) for t in distinct]
    assert best["achieved"]["f1"] == pytest.approx(max(f1s))


@pytest.mark.parametrize(
    ("rule", "target", "message"),
    [
        ("best", None, "unknown threshold rule 'best'"),
        ("target_precision", None, "needs a target"),
        ("target_recall", 0.0, r"\(0, 1\]"),
        ("target_recall", 1.5, r"\(0, 1\]"),
        ("max_f1", 0.5, "takes no target"),
        ("fixed", 1.5, r"\[0, 1\]"),
    ],
)
def test_invalid_rule_or_target_raises(rule, target, message):
    with pytest.raises(ValueError, match=message):
        choose_threshold(Y_TRUE, PROBA, rule, target)


def test_data_driven_rules_need_a_positive():
    with pytest.raises(ValueError, match="no positive"):
        choose_threshold(np.zeros(3), np.array([0.1, 0.5, 0.9]), "target_recall", 0.5)
