"""evaluate → register → report against a real MLflow SQLite store and registry.

The model is trained with a plain Lightning Trainer (no Ray) to keep this tier fast; the Ray
path has its own tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from mlflow.exceptions import MlflowException
from torch.utils.data import DataLoader, TensorDataset

from fairtrain import tracking
from fairtrain.data.preprocessing import Preprocessor
from fairtrain.models.export import save_model
from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.stages.evaluate_stage import evaluate_stage
from fairtrain.stages.register_stage import register_stage
from fairtrain.stages.report_stage import report_stage
from fairtrain.stages.train_stage import features_and_target
from tests.helpers import shrink_params

pytestmark = pytest.mark.slow
EVAL_OUTPUTS = ("evaluation", "fairness", "attributions", "gates", "roc", "confusion", "predictions")


def _train_plain(params, prepared, model_dir: Path, epochs: int) -> None:
    """Train with plain Lightning and export exactly as the train stage does."""
    pl.seed_everything(0, verbose=False)
    preprocessor = Preprocessor.from_dict(json.loads(prepared["preprocessor"].read_text()))
    x, y = features_and_target(pd.read_parquet(prepared["train"]), preprocessor, params)
    module = TabularClassifier(x.shape[1], params.train.hidden_sizes, 0.1, 1e-3, 1e-4)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=256, shuffle=True)
    if epochs:
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, loader)
    state = {k[len("model.") :]: v for k, v in module.state_dict().items() if k.startswith("model.")}
    save_model(
        model_dir,
        state,
        {"n_features": x.shape[1], "hidden_sizes": params.train.hidden_sizes, "dropout": 0.1},
    )


def _pipeline_after_training(params, prepared, out: Path, epochs: int) -> dict:
    """A run like the train stage's, then the real evaluate and register stages."""
    _train_plain(params, prepared, out / "models/model", epochs)
    experiment_id = tracking.configure(params.tracking.experiment)
    with mlflow.start_run() as run:
        ref = tracking.RunRef(run.info.run_id, experiment_id, tracking.resolve_tracking_uri())
    ref.save(out / "models/mlflow_run.json")
    outputs = {n: out / f"eval/{n}.{'parquet' if n == 'predictions' else 'json'}" for n in EVAL_OUTPUTS}
    evaluate_stage(
        params,
        prepared["test"],
        prepared["preprocessor"],
        out / "models/model",
        out / "models/mlflow_run.json",
        outputs,
    )
    record = register_stage(
        params,
        out / "models/model",
        prepared["preprocessor"],
        prepared["test"],
        outputs["evaluation"],
        outputs["gates"],
        out / "models/mlflow_run.json",
        out / "models/registered.json",
        data_path=prepared["raw"],
        project_root=Path.cwd(),
    )
    return {"ref": ref, "outputs": outputs, "record": record}


@pytest.fixture
def lenient(small_params):
    return shrink_params(
        small_params,
        evaluate={
            "min_group_size": 20,
            "gates": {
                "min_roc_auc": 0.8,
                "max_demographic_parity_difference": 0.5,
                "max_equalized_odds_difference": 0.5,
            },
        },
    )


def test_register_promotes_logs_lineage_and_serves_raw_rows(
    lenient, prepared, mlflow_store, tmp_path, adult_raw
):
    first = _pipeline_after_training(lenient, prepared, tmp_path / "a", epochs=3)
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
    assert version.tags["gate_decision"] == "passed"

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
    again = register_stage(
        lenient,
        tmp_path / "a/models/model",
        prepared["preprocessor"],
        prepared["test"],
        first["outputs"]["evaluation"],
        first["outputs"]["gates"],
        tmp_path / "a/models/mlflow_run.json",
        tmp_path / "a/models/registered.json",
        data_path=prepared["raw"],
        project_root=Path.cwd(),
    )
    assert again["version"] == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1

    # An untrained model: registered as challenger, champion stays where it was.
    second = _pipeline_after_training(lenient, prepared, tmp_path / "b", epochs=0)
    assert second["record"]["version"] == "2"
    assert second["record"]["aliases"] == ["challenger"]
    assert not second["record"]["promoted"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"

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
            {"epochs_run": 3, "best_epoch": 3, "best_val_loss": 0.35, "best_val_auc": 0.9, "num_workers": 1}
        )
    )
    card = report_stage(lenient, json_inputs, out / "model_card.md")
    assert f"| ROC-AUC | {evaluation['roc_auc']:.4f} |" in card
    artifacts = [a.path for a in client.list_artifacts(first["ref"].run_id, "model_card")]
    assert artifacts == ["model_card/model_card.md"]


def test_failing_gate_blocks_promotion_with_a_reason(small_params, prepared, mlflow_store, tmp_path):
    strict = shrink_params(small_params, evaluate={"gates": {"min_roc_auc": 0.999}})
    result = _pipeline_after_training(strict, prepared, tmp_path, epochs=1)
    gates = json.loads(result["outputs"]["gates"].read_text())
    assert not gates["passed"]
    assert "roc_auc" in gates["failed"]
    assert result["record"]["aliases"] == ["challenger"]
    version = mlflow.MlflowClient().get_model_version(strict.registry.model_name, "1")
    assert version.tags["gate_decision"] == "failed"
    assert "gate failed" in version.tags["promotion"]
