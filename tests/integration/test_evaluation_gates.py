"""The evaluation decisions that reach the registry, with real training, a real MLflow
registry and the real evaluate and register stages:

- a model made worse for one group fails the champion non-regression gate and is not promoted;
- with mitigation on, the registered model serves ThresholdOptimizer's decisions.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from fairtrain.data.preprocessing import Preprocessor, target_vector
from fairtrain.evaluation.champion import score_champion, serving_rows
from fairtrain.evaluation.mitigation import fit_optimizer
from fairtrain.models.export import load_model
from fairtrain.registry.pyfunc_model import FairtrainModel
from tests.helpers import shrink_params
from tests.integration.pipeline import run_after_training

pytestmark = pytest.mark.slow
WORSE_GROUP = ("sex", "Female")


@pytest.fixture
def quick(lenient):
    """lenient with the parts these tests do not look at made cheap."""
    return shrink_params(lenient, evaluate={"baselines": False, "bootstrap_resamples": 200})


def _labels_flipped_for(prepared: dict, params, out) -> dict:
    """The same training rows, with the label of every row of one group inverted."""
    train = pd.read_parquet(prepared["train"])
    feature, group = WORSE_GROUP
    rows = train[feature].astype(str) == group
    positive, negative = params.dataset.positive_class, params.dataset.negative_class
    label = params.dataset.label
    train.loc[rows, label] = train.loc[rows, label].map({positive: negative, negative: positive})
    out.mkdir(parents=True, exist_ok=True)
    train.to_parquet(out / "train_flipped.parquet", index=False)
    return {**prepared, "train": out / "train_flipped.parquet"}


def test_a_model_worse_for_one_group_fails_non_regression_and_is_not_promoted(
    quick, prepared, mlflow_store, tmp_path
):
    lenient = quick
    name = lenient.registry.model_name
    first = run_after_training(lenient, prepared, tmp_path / "a", epochs=3)
    gates = json.loads(first["outputs"]["gates"].read_text())
    skipped = [c for c in gates["checks"] if c["name"].startswith("champion_non_regression")]
    assert len(skipped) == 1 and skipped[0]["skipped"] and skipped[0]["passed"]
    assert "no champion" in skipped[0]["reason"]
    assert first["record"]["promoted"]

    # The champion scores with the code it was registered with, in a child Python, as when it
    # is served: this process's copy of the serving code, broken here, is not what scores it.
    def checkout_code_fails(*args, **kwargs):
        raise RuntimeError("the checkout's serving code was used")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FairtrainModel, "predict", checkout_code_fails)
        scored = score_champion(name, pd.read_parquet(prepared["test"]), lenient.dataset)
    assert scored is not None and "error" not in scored, scored
    recorded = pd.read_parquet(first["outputs"]["predictions"])["probability"]
    np.testing.assert_allclose(scored["probability"], recorded, rtol=1e-5)

    # Only the non-regression gate may stop the second model: the others are opened fully.
    only_regression = shrink_params(
        lenient,
        evaluate={
            "gates": {
                **lenient.evaluate.gates.model_dump(),
                "min_roc_auc": 0.0,
                "max_expected_calibration_error": 1.0,
            }
        },
    )
    worse = run_after_training(
        only_regression, _labels_flipped_for(prepared, lenient, tmp_path / "b"), tmp_path / "b", epochs=3
    )
    gates = json.loads(worse["outputs"]["gates"].read_text())
    feature, group = WORSE_GROUP
    failing = f"champion_non_regression.roc_auc.{feature}={group}"
    assert not gates["passed"]
    assert failing in gates["failed"]
    assert all(n.startswith("champion_non_regression.") for n in gates["failed"]), gates["failed"]
    compared = gates["champion_non_regression"]
    assert compared["status"] == "compared" and compared["champion_version"] == "1"
    entry = next(g for g in compared["groups"] if (g["feature"], g["group"]) == WORSE_GROUP)
    assert entry["challenger"] < entry["champion_lower"] <= entry["champion"]
    assert "champion v1" in entry["reason"] and "worse than" in entry["reason"]
    # Every gated group of every sensitive feature with enough rows was compared.
    assert {g["feature"] for g in compared["groups"]} == set(lenient.dataset.sensitive_features)

    record = worse["record"]
    assert record["version"] == "2" and not record["promoted"] and record["aliases"] == ["challenger"]
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert client.get_model_version(name, "2").tags["gate_decision"] == "failed"


def test_mitigated_model_serves_threshold_optimizer_decisions(quick, prepared, mlflow_store, tmp_path):
    lenient = quick
    mitigation = {**lenient.evaluate.mitigation.model_dump(), "enabled": True, "sensitive_feature": "sex"}
    params = shrink_params(lenient, evaluate={"mitigation": mitigation})
    result = run_after_training(params, prepared, tmp_path / "m", epochs=3)
    report = json.loads(result["outputs"]["mitigation"].read_text())
    assert report["enabled"] and result["record"]["mitigated"]
    assert set(report["rule"]["groups"]) == {"Female", "Male"}

    # Fairlearn's own predictions, from an optimizer fitted exactly as evaluate fits it.
    schema = params.dataset
    preprocessor = Preprocessor.from_dict(json.loads(prepared["preprocessor"].read_text()))
    network = load_model(tmp_path / "m/models/model")
    val, test = pd.read_parquet(prepared["val"]), pd.read_parquet(prepared["test"])
    optimizer = fit_optimizer(
        network,
        preprocessor.transform(val),
        target_vector(val, schema).astype(np.int64),
        val["sex"].astype(str).to_numpy(),
        params.evaluate.mitigation,
    )
    expected = optimizer.predict(
        preprocessor.transform(test),
        sensitive_features=test["sex"].astype(str).to_numpy(),
        random_state=params.evaluate.mitigation.seed,
    )

    model = mlflow.pyfunc.load_model(f"models:/{params.registry.model_name}/{result['record']['version']}")
    served = model.predict(serving_rows(test, schema))
    decisions = (served["label"] == schema.positive_class).to_numpy().astype(int)
    np.testing.assert_array_equal(decisions, expected)
    # evaluate's saved test decisions are the same ones.
    saved = pd.read_parquet(result["outputs"]["predictions"])
    np.testing.assert_array_equal(saved["y_pred_mitigated"].to_numpy(), expected)
    # The plain threshold would have decided differently somewhere: the rule is really applied.
    assert (decisions != (served["probability"] >= report["rule"]["fallback_threshold"])).any()

    # The PNG figures went to the run beside the JSON reports.
    logged = {
        a.path for a in mlflow.MlflowClient().list_artifacts(result["ref"].run_id, "evaluation/figures")
    }
    assert {"evaluation/figures/roc.png", "evaluation/figures/index.json"} <= logged
    assert "evaluation/mitigation.json" in {
        a.path for a in mlflow.MlflowClient().list_artifacts(result["ref"].run_id, "evaluation")
    }

    # Disparity for the mitigated feature drops on test.
    before = report["before"]["fairness"]["sex"]
    after = report["after"]["fairness"]["sex"]
    assert after["equalized_odds_difference"] < before["equalized_odds_difference"]
    # evaluation.json, a DVC metric, carries the served decisions' disparities beside the
    # threshold's, so an experiment that turns mitigation on shows the change.
    evaluation = json.loads(result["outputs"]["evaluation"].read_text())
    for name in ("demographic_parity_difference", "equalized_odds_difference"):
        assert evaluation["served_disparities"]["sex"][name] == after[name]
        assert evaluation["disparities"]["sex"][name] == before[name]
