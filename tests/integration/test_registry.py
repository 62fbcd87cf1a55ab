"""evaluate → register → report against a real MLflow SQLite store and registry.

The model is trained with a plain Lightning Trainer (no Ray) to keep this tier fast; the Ray
path has its own tests.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from fairtrain.io import file_sha256, json_sha256
from fairtrain.stages.report_stage import report_stage
from tests.helpers import shrink_params
from tests.integration.pipeline import register_again, run_after_training

pytestmark = pytest.mark.slow


def test_register_promotes_logs_lineage_and_serves_raw_rows(
    lenient, small_params, prepared, mlflow_store, tmp_path, adult_raw
):
    first = run_after_training(lenient, prepared, tmp_path / "a", epochs=3)
    name = lenient.registry.model_name
    client = mlflow.MlflowClient()
    assert first["record"]["version"] == "1"
    assert set(first["record"]["aliases"]) == {"challenger", "champion"}

    version = client.get_model_version_by_alias(name, "champion")
    for tag in (
        "git_commit",
        "data_sha256",
        "params_sha256",
        "mlflow_run_id",
        "gate_decision",
        "version.torch",
    ):
        assert tag in version.tags, tag
    assert version.tags["mlflow_run_id"] == first["ref"].run_id == version.run_id
    # The lineage names the inputs exactly: the raw data file the stage was given, and the
    # params this registration ran with (lenient's gates, not the project's).
    assert version.tags["data_path"] == str(prepared["raw"])
    assert version.tags["data_sha256"] == file_sha256(prepared["raw"])
    assert version.tags["params_sha256"] == json_sha256(lenient.model_dump(mode="json"))
    assert version.tags["params_sha256"] != json_sha256(small_params.model_dump(mode="json"))
    assert version.tags["gate_decision"] == "passed"
    from fairtrain.lightning import pl

    # The package training used, from the tag the training set on its run.
    assert version.tags["lightning_package"] == pl.__name__

    # The run holds the test and fairness metrics next to the model.
    metrics = client.get_run(first["ref"].run_id).data.metrics
    evaluation = json.loads(first["outputs"]["evaluation"].read_text())
    assert metrics["test_roc_auc"] == pytest.approx(evaluation["roc_auc"])
    assert "fairness/sex/demographic_parity_difference" in metrics
    assert "group/race/White/true_positive_rate" in metrics

    # Raw CSV rows (strings, '?' markers, an extra column) in, probability and label out.
    rows = adult_raw.drop(columns=[lenient.dataset.label]).head(20).copy()
    rows.loc[0, "native-country"] = "Atlantis"  # unseen category
    for column in lenient.dataset.numeric_features:
        rows[column] = pd.to_numeric(rows[column])
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    predictions = model.predict(rows)
    assert list(predictions.columns) == ["probability", "label"]
    assert predictions["probability"].between(0, 1).all()
    assert set(predictions["label"]) <= set(lenient.dataset.label_values)
    with pytest.raises(MlflowException, match=r"missing inputs.*'age'"):
        model.predict(rows.drop(columns=["age"]))

    # Registering the same run again reuses its version instead of duplicating it.
    again = register_again(lenient, prepared, tmp_path / "a")
    assert again["version"] == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1

    # An untrained model: registered as challenger, champion stays where it was.
    second = run_after_training(lenient, prepared, tmp_path / "b", epochs=0)
    assert second["record"]["version"] == "2"
    assert second["record"]["aliases"] == ["challenger"]
    assert not second["record"]["promoted"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    # Its run has no execution tags (nothing trained), so the package is not guessed.
    assert client.get_model_version(name, "2").tags["lightning_package"] == "unknown"

    # The model card lands in the run and quotes the recorded figures.
    out = tmp_path / "a"
    json_inputs = {
        "validation": prepared["validation"],
        "prepare": prepared["prepare"],
        "augment": prepared["augment"],
        "train": out / "train.json",
        "registered": out / "models/registered.json",
        "run": out / "models/mlflow_run.json",
        **{k: first["outputs"][k] for k in ("evaluation", "fairness", "attributions", "gates")},
    }
    (out / "train.json").write_text(
        json.dumps(
            {
                "epochs_run": 3,
                "best_epoch": 3,
                "best_val_loss": 0.35,
                "best_val_auc": 0.9,
                "num_workers": 1,
                "hyperparameters": lenient.train.model_dump(mode="json"),
            }
        )
    )
    card = report_stage(lenient, json_inputs, out / "model_card.md")
    assert f"| ROC-AUC | {evaluation['roc_auc']:.4f} |" in card
    artifacts = [a.path for a in client.list_artifacts(first["ref"].run_id, "model_card")]
    assert artifacts == ["model_card/model_card.md"]


def test_failing_gate_blocks_promotion_with_a_reason(small_params, prepared, mlflow_store, tmp_path):
    strict = shrink_params(small_params, evaluate={"gates": {"min_roc_auc": 0.999}})
    result = run_after_training(strict, prepared, tmp_path, epochs=1)
    gates = json.loads(result["outputs"]["gates"].read_text())
    assert not gates["passed"]
    assert "roc_auc" in gates["failed"]
    assert result["record"]["aliases"] == ["challenger"]
    version = mlflow.MlflowClient().get_model_version(strict.registry.model_name, "1")
    assert version.tags["gate_decision"] == "failed"
    assert "gate failed" in version.tags["promotion"]
