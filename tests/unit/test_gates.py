"""fairtrain.evaluation.gates.evaluate_gates: every check with value, threshold and reason."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from fairtrain.config import GatesConfig, params_from_dict
from fairtrain.evaluation.fairness import group_metrics
from fairtrain.evaluation.gates import THRESHOLD_KEYS, evaluate_gates, unset_thresholds

GATES = GatesConfig(
    min_roc_auc=0.88,
    max_demographic_parity_difference=0.25,
    max_equalized_odds_difference=0.25,
    max_expected_calibration_error=0.05,
)


def _audit(dpd, eod, excluded=()):
    """An audit in the shape ``fairness.group_metrics`` returns (two groups of 200 rows)."""
    row = {"count": 200, "selection_rate": 0.2, "true_positive_rate": 0.7, "false_positive_rate": 0.1}
    groups = {"F": dict(row), "M": dict(row)}
    groups.update({name: dict(row, count=10) for name in excluded})
    return {
        "groups": groups,
        "min_group_size": 100,
        "excluded_groups": sorted(excluded),
        "demographic_parity_difference": dpd,
        "equalized_odds_difference": eod,
        "all_groups": {"demographic_parity_difference": dpd, "equalized_odds_difference": eod},
    }


def _check(result, name):
    return next(c for c in result["checks"] if c["name"] == name)


def test_all_gates_pass():
    result = evaluate_gates(
        {"roc_auc": 0.91, "ece": 0.01}, {"sex": _audit(0.2, 0.1), "race": _audit(0.05, 0.25)}, GATES
    )
    assert result["passed"] is True
    assert result["failed"] == []
    assert result["summary"] == "all gates passed"
    assert [c["name"] for c in result["checks"]] == [
        "roc_auc",
        "ece",
        "sex.demographic_parity_difference",
        "sex.equalized_odds_difference",
        "race.demographic_parity_difference",
        "race.equalized_odds_difference",
    ]
    roc = _check(result, "roc_auc")
    assert roc == {
        "name": "roc_auc",
        "value": 0.91,
        "threshold": 0.88,
        "passed": True,
        "reason": "roc_auc = 0.9100 meets the requirement >= 0.88",
    }
    json.dumps(result)


def test_values_on_the_threshold_pass():
    result = evaluate_gates({"roc_auc": 0.88, "ece": 0.01}, {"sex": _audit(0.25, 0.25)}, GATES)
    assert result["passed"] is True


@pytest.mark.parametrize(
    ("overall", "fairness", "failed"),
    [
        ({"roc_auc": 0.87, "ece": 0.01}, {"sex": _audit(0.1, 0.1)}, ["roc_auc"]),
        ({"roc_auc": 0.95, "ece": 0.01}, {"sex": _audit(0.2501, 0.1)}, ["sex.demographic_parity_difference"]),
        (
            {"roc_auc": 0.95, "ece": 0.01},
            {"sex": _audit(0.1, 0.1), "race": _audit(0.1, 0.6)},
            ["race.equalized_odds_difference"],
        ),
        (
            {"roc_auc": 0.5, "ece": 0.01},
            {"sex": _audit(0.3, 0.3)},
            ["roc_auc", "sex.demographic_parity_difference", "sex.equalized_odds_difference"],
        ),
    ],
)
def test_failing_gates_are_named_with_reasons(overall, fairness, failed):
    result = evaluate_gates(overall, fairness, GATES)
    assert result["passed"] is False
    assert result["failed"] == failed
    assert result["summary"] == f"failed gates: {', '.join(failed)}"
    for name in failed:
        check = _check(result, name)
        assert check["passed"] is False
        assert "fails the requirement" in check["reason"]
        assert f"{check['value']:.4f}" in check["reason"]


def test_failing_reason_text():
    result = evaluate_gates({"roc_auc": 0.95, "ece": 0.01}, {"sex": _audit(0.3, 0.1)}, GATES)
    assert _check(result, "sex.demographic_parity_difference")["reason"] == (
        "sex.demographic_parity_difference = 0.3000 fails the requirement <= 0.25"
    )


def test_none_metric_fails_with_a_reason():
    result = evaluate_gates({"roc_auc": 0.95, "ece": 0.01}, {"sex": _audit(None, 0.1)}, GATES)
    assert result["passed"] is False
    assert result["failed"] == ["sex.demographic_parity_difference"]
    check = _check(result, "sex.demographic_parity_difference")
    assert check["value"] is None
    assert check["passed"] is False
    assert check["reason"].startswith("sex.demographic_parity_difference")
    assert "undefined" in check["reason"]
    assert _check(result, "sex.equalized_odds_difference")["passed"] is True


def test_missing_roc_auc_fails():
    for overall in ({"roc_auc": None, "ece": 0.01}, {"ece": 0.01}):
        result = evaluate_gates(overall, {}, GATES)
        assert result["passed"] is False
        assert result["failed"] == ["roc_auc"]
        check = _check(result, "roc_auc")
        assert check["value"] is None
        assert "roc_auc" in check["reason"] and "undefined" in check["reason"]


def test_gates_on_a_real_audit_with_too_few_large_groups():
    # group_metrics gives null disparities when fewer than two groups are large enough;
    # the gate must fail closed and say which groups were too small.
    y_true = np.array([1, 0] * 60 + [1, 0] * 5)
    y_pred = np.array([1, 0] * 60 + [0, 1] * 5)
    sensitive = pd.Series(["White"] * 120 + ["Other"] * 10)
    audit = group_metrics(y_true, y_pred, sensitive, min_group_size=100)
    assert audit["demographic_parity_difference"] is None
    result = evaluate_gates({"roc_auc": 0.95, "ece": 0.01}, {"race": audit}, GATES)
    assert result["failed"] == ["race.demographic_parity_difference", "race.equalized_odds_difference"]
    for name in result["failed"]:
        check = _check(result, name)
        assert check["value"] is None
        assert "Other" in check["reason"]


def test_calibration_gate_fails_above_the_maximum_and_when_undefined():
    fairness = {"sex": _audit(0.1, 0.1)}
    assert evaluate_gates({"roc_auc": 0.95, "ece": 0.05}, fairness, GATES)["passed"]
    high = evaluate_gates({"roc_auc": 0.95, "ece": 0.0501}, fairness, GATES)
    assert high["failed"] == ["ece"]
    assert _check(high, "ece")["reason"] == "ece = 0.0501 fails the requirement <= 0.05"
    assert evaluate_gates({"roc_auc": 0.95, "ece": None}, fairness, GATES)["failed"] == ["ece"]


def test_non_regression_checks_join_the_gates():
    overall, fairness = {"roc_auc": 0.95, "ece": 0.01}, {"sex": _audit(0.1, 0.1)}
    skipped = {"status": "skipped", "reason": "no champion in the registry yet", "metric": "roc_auc"}
    result = evaluate_gates(overall, fairness, GATES, skipped)
    check = _check(result, "champion_non_regression.roc_auc")
    assert result["passed"] and check["passed"] and check["skipped"]
    assert check["reason"] == "skipped: no champion in the registry yet"

    group = {"feature": "sex", "group": "F", "rows": 300, "challenger": 0.70, "champion": 0.85}
    compared = {
        "status": "compared",
        "metric": "roc_auc",
        "groups": [
            {**group, "champion_lower": 0.80, "champion_upper": 0.9, "passed": False, "reason": "worse"},
            {
                **group,
                "group": "M",
                "challenger": 0.84,
                "champion_lower": 0.80,
                "champion_upper": 0.9,
                "passed": True,
                "reason": "within",
            },
        ],
    }
    result = evaluate_gates(overall, fairness, GATES, compared)
    assert result["failed"] == ["champion_non_regression.roc_auc.sex=F"]
    assert result["champion_non_regression"] == compared
    assert _check(result, "champion_non_regression.roc_auc.sex=M")["champion_interval"] == [0.8, 0.9]


def test_a_lower_is_better_group_gate_records_the_upper_bound_it_was_held_to():
    """For log loss the challenger fails above the champion interval's upper end, so that end
    is the threshold gates.json and the model card show (not the lower end)."""
    overall, fairness = {"roc_auc": 0.95, "ece": 0.01}, {"sex": _audit(0.1, 0.1)}
    compared = {
        "status": "compared",
        "metric": "log_loss",
        "groups": [
            {
                "feature": "sex",
                "group": "F",
                "rows": 300,
                "challenger": 0.36,
                "champion": 0.30,
                "champion_lower": 0.28,
                "champion_upper": 0.33,
                "passed": False,
                "reason": "worse",
            }
        ],
    }
    result = evaluate_gates(overall, fairness, GATES, compared)
    check = _check(result, "champion_non_regression.log_loss.sex=F")
    assert check["threshold"] == 0.33
    assert check["champion_interval"] == [0.28, 0.33]


def test_thresholds_a_params_file_leaves_out_are_reported_with_their_fallbacks(project_root):
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    assert unset_thresholds(params_from_dict(raw).evaluate.gates) == {}  # the shipped file sets all
    del raw["evaluate"]["gates"]["min_roc_auc"], raw["evaluate"]["gates"]["max_expected_calibration_error"]
    assert unset_thresholds(params_from_dict(raw).evaluate.gates) == {
        "min_roc_auc": 0.0,
        "max_expected_calibration_error": 1.0,
    }
    del raw["evaluate"]["gates"]
    assert set(unset_thresholds(params_from_dict(raw).evaluate.gates)) == set(THRESHOLD_KEYS)


def test_a_gate_at_its_fallback_threshold_says_so_in_its_check():
    # Only min_roc_auc set: the other thresholds are the fallbacks, which pass these values.
    result = evaluate_gates(
        {"roc_auc": 0.91, "ece": 0.3}, {"sex": _audit(0.6, 0.1)}, GatesConfig(min_roc_auc=0.88)
    )
    assert result["passed"] is True
    assert "threshold_set" not in _check(result, "roc_auc")
    ece = _check(result, "ece")
    assert ece["threshold_set"] is False
    assert ece["reason"] == (
        "ece = 0.3000 meets the requirement <= 1.0 "
        "(evaluate.gates.max_expected_calibration_error is not set in params: fallback 1.0)"
    )
    parity = _check(result, "sex.demographic_parity_difference")
    assert parity["threshold_set"] is False
    assert "max_demographic_parity_difference is not set in params" in parity["reason"]
