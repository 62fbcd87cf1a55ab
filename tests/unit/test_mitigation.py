"""fairtrain.evaluation.mitigation / decision_rule: the JSON rule reproduces Fairlearn's
ThresholdOptimizer exactly, and mitigation narrows the disparity it targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fairtrain.config import MitigationConfig
from fairtrain.evaluation.decision_rule import apply_rule
from fairtrain.evaluation.mitigation import (
    TorchProbabilityClassifier,
    compare,
    fit_optimizer,
    rule_from_optimizer,
)


class Network(nn.Module):
    """The interface of TabularMLP the wrapper uses: a logit, and predict_proba on it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[2.0, 1.0]]))
            self.linear.bias.fill_(-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))


def _data(rows: int, seed: int):
    """Group "b" has higher scores for the same label: a biased scorer."""
    rng = np.random.default_rng(seed)
    groups = np.where(rng.random(rows) < 0.4, "a", "b")
    y = (rng.random(rows) < 0.35).astype(np.int64)
    x = rng.normal(size=(rows, 2)).astype(np.float32)
    x[:, 0] += 1.2 * y + 0.8 * (groups == "b")
    return x, y, groups


@pytest.mark.parametrize("constraint", ["equalized_odds", "demographic_parity"])
def test_json_rule_reproduces_threshold_optimizer_predictions(constraint):
    settings = MitigationConfig(enabled=True, constraint=constraint, grid_size=200, seed=7)
    network = Network()
    x_val, y_val, s_val = _data(2000, 0)
    optimizer = fit_optimizer(network, x_val, y_val, s_val, settings)
    rule = json.loads(json.dumps(rule_from_optimizer(optimizer, settings, "group", 0.5)))
    assert rule["constraint"] == constraint and set(rule["groups"]) == {"a", "b"}

    x_test, _, s_test = _data(3000, 1)
    scores = TorchProbabilityClassifier(network).predict_proba(x_test)[:, 1]
    expected = optimizer.predict(x_test, sensitive_features=s_test, random_state=7)
    np.testing.assert_array_equal(apply_rule(rule, scores, s_test), expected)
    # Another seed draws differently: the randomisation is really the seeded one.
    other = optimizer.predict(x_test, sensitive_features=s_test, random_state=8)
    assert (apply_rule(rule, scores, s_test) != other).any()


def test_unknown_groups_fall_back_to_the_threshold_and_infinite_thresholds_survive_json():
    rule = {
        "seed": 0,
        "fallback_threshold": 0.5,
        "groups": {
            "a": {
                "p0": 1.0,
                "operation0": {"operator": ">", "threshold": "-inf"},  # always positive
                "p1": 0.0,
                "operation1": {"operator": "<", "threshold": "inf"},
                "p_ignore": 0.0,
                "prediction_constant": 0.0,
            }
        },
    }
    scores = np.array([0.1, 0.9, 0.1, 0.9])
    np.testing.assert_array_equal(apply_rule(rule, scores, np.array(["a", "a", "z", "z"])), [1, 1, 0, 1])


def test_mitigation_narrows_the_targeted_disparity():
    settings = MitigationConfig(enabled=True, constraint="equalized_odds", grid_size=200)
    network = Network()
    x_val, y_val, s_val = _data(4000, 0)
    rule = rule_from_optimizer(fit_optimizer(network, x_val, y_val, s_val, settings), settings, "group", 0.5)
    x_test, y_test, s_test = _data(4000, 2)
    scores = TorchProbabilityClassifier(network).predict_proba(x_test)[:, 1]
    before = (scores >= 0.5).astype(np.int64)
    after = apply_rule(rule, scores, s_test)
    side_by_side, audit_after = compare(y_test, before, after, pd.DataFrame({"group": s_test}), ["group"], 10)
    b, a = side_by_side["before"]["fairness"]["group"], side_by_side["after"]["fairness"]["group"]
    assert a["equalized_odds_difference"] < b["equalized_odds_difference"] / 2
    assert set(a["groups"]["a"]) >= {"count", "accuracy", "selection_rate", "true_positive_rate"}
    assert audit_after["group"]["equalized_odds_difference"] == a["equalized_odds_difference"]
    assert side_by_side["after"]["accuracy"] == pytest.approx(np.mean(after == y_test))
