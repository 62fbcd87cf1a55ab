"""The train stage refuses to start while an identical training holds its model directory,
before it opens an MLflow run, starts Ray or touches any output."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from fairtrain.errors import TrainingError
from fairtrain.stages.train_stage import STORAGE_DIR, training_key
from fairtrain.training.driver_guard import exclusive_training
from tests.integration.pipeline import train_with_ray


def test_the_stage_refuses_to_run_beside_an_identical_training(
    small_params, prepared, mlflow_store, tmp_path
):
    key = training_key(small_params, prepared["train"], prepared["val"], prepared["preprocessor"])
    lock = (tmp_path / "models" / STORAGE_DIR).resolve() / f"fairtrain-train-{key}.lock"
    with exclusive_training(lock), pytest.raises(TrainingError, match="already running"):
        train_with_ray(small_params, prepared, tmp_path)
    client = MlflowClient(mlflow_store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []  # no run opened, so none left RUNNING
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "models/model").exists()
