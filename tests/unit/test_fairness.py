"""fairtrain.evaluation.fairness.group_metrics on an example computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairtrain.evaluation.fairness import fairness_audit, group_metrics

# Group A (4 rows): y_true 1 1 0 0, y_pred 1 0 1 0 → selection 2/4, TPR 1/2, FPR 1/2, accuracy 2/4.
# Group B (6 rows): y_true 1 1 1 0 0 0, y_pred 1 1 1 0 0 1 → selection 4/6, TPR 1, FPR 1/3, acc 5/6.
# Group C (2 rows): y_true 1 0, y_pred 1 1 → selection 1, TPR 1, FPR 1, accuracy 1/2.
Y_TRUE = np.concatenate([[1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [1, 0]])
Y_PRED = np.concatenate([[1, 0, 1, 0], [1, 1, 1, 0, 0, 1], [1, 1]])
GROUPS = pd.Series(["A"] * 4 + ["B"] * 6 + ["C"] * 2)


def test_per_group_rates_by_hand():
    result = group_metrics(Y_TRUE, Y_PRED, GROUPS, min_group_size=1)
    groups = result["groups"]
    assert set(groups) == {"A", "B", "C"}
    assert groups["A"] == {
        "count": 4,
        "selection_rate": 0.5,
        "true_positive_rate": 0.5,
        "false_positive_rate": 0.5,
        "false_negative_rate": 0.5,
        "accuracy": 0.5,
    }
    assert groups["B"]["count"] == 6
    assert groups["B"]["selection_rate"] == pytest.approx(4 / 6)
    assert groups["B"]["true_positive_rate"] == 1.0
    assert groups["B"]["false_positive_rate"] == pytest.approx(1 / 3)
    assert groups["B"]["accuracy"] == pytest.approx(5 / 6)
    assert groups["C"]["selection_rate"] == 1.0
    assert isinstance(groups["A"]["count"], int)
    json.dumps(result)


def test_disparities_over_all_eligible_groups():
    result = group_metrics(Y_TRUE, Y_PRED, GROUPS, min_group_size=1)
    assert result["excluded_groups"] == []
    # selection rates .5, .667, 1 → DPD = 1 - .5; TPR .5, 1, 1 and FPR .5, 1/3, 1 → EOD = 2/3
    assert result["demographic_parity_difference"] == pytest.approx(0.5)
    assert result["equalized_odds_difference"] == pytest.approx(2 / 3)
    # ratios: selection .5/1; TPR .5/1 and FPR (1/3)/1 → equalized odds ratio 1/3
    assert result["all_groups"] == {
        "demographic_parity_difference": pytest.approx(0.5),
        "equalized_odds_difference": pytest.approx(2 / 3),
        "demographic_parity_ratio": pytest.approx(0.5),
        "equalized_odds_ratio": pytest.approx(1 / 3),
    }


def test_small_group_is_excluded_from_the_gated_disparities():
    result = group_metrics(Y_TRUE, Y_PRED, GROUPS, min_group_size=3)
    assert result["min_group_size"] == 3
    assert result["excluded_groups"] == ["C"]
    assert "C" in result["groups"]  # still reported
    # A vs B only: DPD = 2/3 - 1/2 = 1/6; EOD = max(|.5 - 1|, |.5 - 1/3|) = 1/2
    assert result["demographic_parity_difference"] == pytest.approx(1 / 6)
    assert result["equalized_odds_difference"] == pytest.approx(0.5)
    # all_groups still includes C
    assert result["all_groups"]["demographic_parity_difference"] == pytest.approx(0.5)
    assert result["all_groups"]["equalized_odds_difference"] == pytest.approx(2 / 3)


def test_group_of_exactly_min_group_size_is_kept():
    result = group_metrics(Y_TRUE, Y_PRED, GROUPS, min_group_size=4)  # A has 4 rows, C has 2
    assert result["excluded_groups"] == ["C"]
    assert result["demographic_parity_difference"] == pytest.approx(1 / 6)


def test_fewer_than_two_eligible_groups_gives_null_disparities():
    result = group_metrics(Y_TRUE, Y_PRED, GROUPS, min_group_size=5)
    assert result["excluded_groups"] == ["A", "C"]
    assert result["demographic_parity_difference"] is None
    assert result["equalized_odds_difference"] is None
    assert result["all_groups"]["demographic_parity_difference"] == pytest.approx(0.5)


# Group N has only negatives (TPR undefined), group P only positives (FPR undefined).
SINGLE_TRUE = np.concatenate([[0, 0, 0, 0], [1, 1, 1], [1, 1, 0, 0]])
SINGLE_PRED = np.concatenate([[1, 0, 0, 0], [1, 0, 1], [1, 0, 0, 1]])
SINGLE_GROUPS = pd.Series(["N"] * 4 + ["P"] * 3 + ["M"] * 4)


def test_single_class_group_does_not_crash():
    result = group_metrics(SINGLE_TRUE, SINGLE_PRED, SINGLE_GROUPS, min_group_size=1)
    groups = result["groups"]
    assert groups["N"]["count"] == 4
    assert groups["N"]["false_positive_rate"] == pytest.approx(1 / 4)  # defined: 4 negatives
    assert groups["N"]["selection_rate"] == pytest.approx(1 / 4)
    assert groups["P"]["true_positive_rate"] == pytest.approx(2 / 3)  # defined: 3 positives
    assert groups["M"]["true_positive_rate"] == 0.5
    json.dumps(result)


def test_single_class_group_gives_null_for_the_undefined_rate():
    result = group_metrics(SINGLE_TRUE, SINGLE_PRED, SINGLE_GROUPS, min_group_size=1)
    assert result["groups"]["N"]["true_positive_rate"] is None  # no positives in N
    assert result["groups"]["P"]["false_positive_rate"] is None  # no negatives in P


def test_fairness_audit_covers_every_sensitive_feature():
    frame = pd.DataFrame({"sex": GROUPS.map({"A": "F", "B": "M", "C": "M"}), "race": GROUPS})
    audit = fairness_audit(Y_TRUE, Y_PRED, frame, ["sex", "race"], min_group_size=3)
    assert list(audit) == ["sex", "race", "sex × race"]  # the intersection is reported too
    assert audit["sex"]["groups"]["M"]["count"] == 8
    assert audit["race"]["excluded_groups"] == ["C"]
    # sex: F selection 2/4, M selection 6/8 → DPD 1/4
    assert audit["sex"]["demographic_parity_difference"] == pytest.approx(0.25)


def test_auc_per_group_reasons_for_undefined_rates_and_the_intersection():
    proba = np.where(Y_PRED == 1, 0.8, 0.2) + np.linspace(0, 0.01, len(Y_PRED))
    frame = pd.DataFrame({"sex": GROUPS.map({"A": "F", "B": "M", "C": "M"}), "race": GROUPS})
    audit = fairness_audit(Y_TRUE, Y_PRED, frame, ["sex", "race"], min_group_size=1, proba=proba)
    assert [audit[k]["gated"] for k in audit] == [True, True, False]
    cells = audit["sex × race"]["groups"]
    assert set(cells) == {"F × A", "M × B", "M × C"}
    assert cells["F × A"]["count"] == 4
    # Group A's AUC from its definition: P(a positive scores above a negative), ties half.
    a = GROUPS.to_numpy() == "A"
    pos, neg = proba[a][Y_TRUE[a] == 1], proba[a][Y_TRUE[a] == 0]
    expected = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert audit["race"]["groups"]["A"]["roc_auc"] == pytest.approx(expected)

    single = group_metrics(
        SINGLE_TRUE, SINGLE_PRED, SINGLE_GROUPS, min_group_size=1, proba=SINGLE_PRED.astype(float)
    )
    assert single["groups"]["N"]["roc_auc"] is None
    assert single["groups"]["N"]["undefined"]["true_positive_rate"] == "no positive rows in this group"
    assert single["groups"]["P"]["undefined"]["false_positive_rate"] == "no negative rows in this group"
