"""fairtrain.evaluation.attribution.integrated_gradients on a model with a closed-form answer.

For f(x) = sigmoid(w·x + b) and the all-zeros baseline, the straight-line path integral is
exact: attribution_i(x) = w_i x_i (f(x) - f(0)) / (w·x).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fairtrain.evaluation.attribution import integrated_gradients

WEIGHTS = np.array([1.5, -2.0, 0.8, -0.4, 0.0], dtype=np.float32)
BIAS = 0.1
# two numerics, one categorical one-hot over three slots
GROUPS = {"age": [0], "hours": [1], "workclass": [2, 3, 4]}


class Logit(nn.Module):
    """A linear logit, the shape of TabularMLP's output (one logit per row)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(len(WEIGHTS), 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(WEIGHTS)[None, :])
            self.linear.bias.fill_(BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


def _features(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((rows, len(WEIGHTS)), dtype=np.float32)
    x[:, :2] = rng.normal(size=(rows, 2))
    x[np.arange(rows), 2 + rng.integers(0, 3, rows)] = 1.0
    return x


def _exact(x: np.ndarray) -> np.ndarray:
    """Closed-form IG attributions per model feature."""
    z = x.astype(np.float64) @ WEIGHTS.astype(np.float64)

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    gain = sigmoid(z + BIAS) - sigmoid(BIAS)
    return x * WEIGHTS * (gain / z)[:, None]


@pytest.fixture
def result():
    return integrated_gradients(Logit(), _features(40), GROUPS, n_steps=50, internal_batch_size=4096)


def test_report_shape(result):
    assert result["method"] == "integrated_gradients"
    assert result["rows"] == 40
    assert result["n_steps"] == 50
    assert [row["column"] for row in result["importance"]] != []
    assert {row["column"] for row in result["importance"]} == set(GROUPS)
    json.dumps(result)


def test_attributions_match_the_closed_form_with_one_hot_columns_summed(result):
    exact = _exact(_features(40))
    per_column = {c: exact[:, idx].sum(axis=1) for c, idx in GROUPS.items()}
    by_name = {row["column"]: row for row in result["importance"]}
    for column, values in per_column.items():
        assert by_name[column]["mean_abs_attribution"] == pytest.approx(np.abs(values).mean(), abs=1e-4)
        assert by_name[column]["mean_attribution"] == pytest.approx(values.mean(), abs=1e-4)
    # workclass is the sum of its three one-hot slots, not one of them
    single_slot = np.abs(exact[:, 2]).mean()
    assert by_name["workclass"]["mean_abs_attribution"] != pytest.approx(single_slot, abs=1e-4)


def test_importance_is_sorted_and_shares_sum_to_one(result):
    values = [row["mean_abs_attribution"] for row in result["importance"]]
    assert values == sorted(values, reverse=True)
    assert sum(row["share"] for row in result["importance"]) == pytest.approx(1.0)
    for row in result["importance"]:
        assert row["share"] == pytest.approx(row["mean_abs_attribution"] / sum(values))


def test_completeness_and_small_convergence_delta(result):
    delta = result["convergence_delta"]
    assert delta["max_abs"] < 1e-2
    assert 0 <= delta["mean_abs"] <= delta["p95_abs"] <= delta["max_abs"]
    # completeness: the signed attributions add up to f(x) - f(baseline) on average
    x = torch.from_numpy(_features(40))
    with torch.no_grad():
        model = Logit()
        gain = (torch.sigmoid(model(x)) - torch.sigmoid(model(torch.zeros_like(x)))).mean().item()
    assert sum(row["mean_attribution"] for row in result["importance"]) == pytest.approx(gain, abs=1e-4)


def test_sample_larger_than_internal_batch_size(result):
    chunked = integrated_gradients(Logit(), _features(40), GROUPS, n_steps=50, internal_batch_size=7)
    assert chunked["rows"] == 40
    assert chunked["convergence_delta"]["max_abs"] < 1e-2
    assert [r["column"] for r in chunked["importance"]] == [r["column"] for r in result["importance"]]
    for a, b in zip(chunked["importance"], result["importance"], strict=True):
        assert a["mean_abs_attribution"] == pytest.approx(b["mean_abs_attribution"], abs=1e-6)
        assert a["mean_attribution"] == pytest.approx(b["mean_attribution"], abs=1e-6)


def test_zero_weight_feature_gets_no_attribution_and_model_stays_in_eval_mode():
    model = Logit().train()
    x = _features(10)
    x[:, 2:] = 0.0
    x[:, 4] = 1.0  # every row in the slot whose weight is 0
    out = integrated_gradients(model, x, GROUPS, n_steps=20, internal_batch_size=64)
    assert not model.training
    by_name = {row["column"]: row for row in out["importance"]}
    assert by_name["workclass"]["mean_abs_attribution"] == pytest.approx(0.0, abs=1e-7)
    assert out["importance"][-1]["column"] == "workclass"
