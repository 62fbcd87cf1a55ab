"""fairtrain.evaluation.champion.non_regression: challenger vs champion per gated group."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairtrain.config import NonRegressionConfig
from fairtrain.evaluation.bootstrap import roc_auc
from fairtrain.evaluation.champion import non_regression

SETTINGS = NonRegressionConfig(enabled=True, metric="roc_auc")


def _data(rows=1200, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.3).astype(np.int64)
    good = np.clip(0.45 * y + 0.55 * rng.random(rows), 0, 1)
    frame = pd.DataFrame(
        {
            "sex": np.where(rng.random(rows) < 0.5, "F", "M"),
            "race": np.where(rng.random(rows) < 0.97, "W", "B"),
        }
    )
    return y, good, frame


def _champion(proba):
    return {"version": "3", "run_id": "r", "probability": proba, "y_pred": (proba >= 0.5).astype(np.int64)}


def _run(y, proba, champion, frame, settings=SETTINGS, resamples=200):
    pred = (proba >= 0.5).astype(np.int64)
    return non_regression(y, proba, pred, champion, frame, ["sex", "race"], 100, settings, resamples, 0.95, 0)


def test_skipped_without_a_champion_or_when_disabled():
    y, good, frame = _data()
    none = _run(y, good, None, frame)
    assert none["status"] == "skipped" and "no champion" in none["reason"] and none["groups"] == []
    off = _run(y, good, _champion(good), frame, NonRegressionConfig(enabled=False))
    assert off["status"] == "skipped" and "disabled" in off["reason"]


def test_the_same_model_passes_every_group_and_small_groups_are_not_compared():
    y, good, frame = _data()
    result = _run(y, good, _champion(good), frame)
    assert result["status"] == "compared" and result["champion_version"] == "3"
    assert {(g["feature"], g["group"]) for g in result["groups"]} == {
        ("sex", "F"),
        ("sex", "M"),
        ("race", "W"),
    }
    for group in result["groups"]:
        assert group["passed"] and group["challenger"] == group["champion"]
        assert group["champion_lower"] <= group["champion"] <= group["champion_upper"]
    female = next(g for g in result["groups"] if g["group"] == "F")
    rows = (frame["sex"] == "F").to_numpy()
    assert female["champion"] == roc_auc(y[rows], good[rows])


def test_a_drop_in_one_group_beyond_the_champion_interval_fails_only_that_group():
    y, good, frame = _data()
    worse = good.copy()
    female = (frame["sex"] == "F").to_numpy()
    worse[female] = np.random.default_rng(5).random(female.sum())  # no signal left for F
    result = _run(y, worse, _champion(good), frame)
    by_group = {(g["feature"], g["group"]): g for g in result["groups"]}
    assert not by_group[("sex", "F")]["passed"]
    assert by_group[("sex", "F")]["challenger"] < by_group[("sex", "F")]["champion_lower"]
    assert "worse than champion v3" in by_group[("sex", "F")]["reason"]
    assert by_group[("sex", "M")]["passed"]


def test_lower_is_better_metrics_fail_above_the_upper_bound_and_no_bootstrap_means_any_drop():
    y, good, frame = _data()
    worse = np.clip(good + 0.3, 0, 1)
    result = _run(y, worse, _champion(good), frame, NonRegressionConfig(metric="brier"))
    assert all(not g["passed"] and g["challenger"] > g["champion_upper"] for g in result["groups"])
    same = _run(y, good, _champion(good), frame, resamples=0)
    assert all(g["passed"] for g in same["groups"]) and "bootstrap off" in same["method"]
    assert all(g["champion_lower"] == g["champion"] for g in same["groups"])


def test_a_champion_that_cannot_score_fails_closed():
    from fairtrain.config import GatesConfig
    from fairtrain.evaluation.gates import evaluate_gates

    y, good, frame = _data()
    broken = {"version": "3", "run_id": "r", "error": "No such file: model.safetensors"}
    result = _run(y, good, broken, frame)
    assert result["status"] == "unavailable" and "model.safetensors" in result["reason"]
    gates = evaluate_gates({"roc_auc": 0.9, "ece": 0.01}, {}, GatesConfig(), result)
    assert gates["failed"] == ["champion_non_regression.roc_auc"]


def test_the_champions_overall_promotion_metrics_on_this_split_are_recorded():
    # register compares the challenger with these, not with the champion's own run metrics.
    from fairtrain.config import PRIMARY_METRICS
    from fairtrain.evaluation.metrics import classification_metrics

    y, good, frame = _data()
    champion = _champion(good)
    champion["y_pred"] = (good >= 0.4).astype(np.int64)  # its own served decisions
    result = _run(y, np.clip(good + 0.01, 0, 1), champion, frame)
    overall = result["champion_overall"]
    assert set(overall) == set(PRIMARY_METRICS)
    assert overall["roc_auc"] == roc_auc(y, good)
    assert overall["log_loss"] == classification_metrics(y, good, 0.5)["log_loss"]
    assert overall["accuracy"] == classification_metrics(y, good, 0.4)["accuracy"]
    # Without a champion, evaluate says it saw none (register refuses when one appeared since).
    assert _run(y, good, None, frame)["champion_version"] is None
    off = _run(y, good, champion, frame, NonRegressionConfig(enabled=False))
    assert "champion_version" not in off and "champion_overall" not in off
