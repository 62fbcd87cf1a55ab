"""Real Ray Train with 2 CPU workers (gloo DDP) and a real MLflow store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import ray
import torch
from sklearn.metrics import roc_auc_score

from fairtrain import tracking
from fairtrain.data.preprocessing import Preprocessor, target_vector
from fairtrain.errors import TrainingError
from fairtrain.lightning import pl
from fairtrain.models.export import load_model
from fairtrain.stages import train_stage as train_stage_module
from fairtrain.training.tags import (
    BACKEND_TAG,
    DETERMINISTIC_TAG,
    DEVICE_TAG,
    LIGHTNING_TAG,
    PRECISION_TAG,
    WORLD_SIZE_TAG,
)
from tests.helpers import shrink_params
from tests.integration.pipeline import train_with_ray
from tests.integration.servers import driver_only_credentials

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module; shut down afterwards so other tests start clean."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_two_workers_train_one_run_with_per_epoch_metrics(
    local_ray, prepared, small_params, mlflow_store, tmp_path
):
    ref = train_with_ray(small_params, prepared, tmp_path)

    runs = mlflow.search_runs(experiment_ids=[ref.experiment_id], output_format="list")
    assert [r.info.run_id for r in runs] == [ref.run_id], "workers must not open runs of their own"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.num_workers"] == "2"
    assert run.data.params["train.max_epochs"] == "3"
    assert run.inputs.dataset_inputs, "the training data's digest is logged as a run input"
    # Where the training ran, as the workers saw it (rank 0 tags the run).
    assert run.data.tags[DEVICE_TAG] == "cpu"
    assert run.data.tags[BACKEND_TAG] == "gloo"
    assert run.data.tags[PRECISION_TAG] == "32-true"
    assert run.data.tags[WORLD_SIZE_TAG] == "2"
    assert run.data.tags[DETERMINISTIC_TAG] == "true"
    assert run.data.tags[LIGHTNING_TAG] == pl.__name__
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system

    summary = json.loads((tmp_path / "metrics/train.json").read_text())
    history = mlflow.MlflowClient().get_metric_history(ref.run_id, "val_loss")
    # Rank 0 alone logs one value per epoch: two workers would double it.
    assert len(history) == summary["epochs_run"] <= 3
    assert [m.step for m in history] == list(range(summary["epochs_run"]))
    assert len(json.loads((tmp_path / "plots/train_history.json").read_text())) == summary["epochs_run"]

    # The exported model is the best epoch's and it has learned something real.
    preprocessor = Preprocessor.from_dict(json.loads(prepared["preprocessor"].read_text()))
    test = pd.read_parquet(prepared["test"])
    model = load_model(tmp_path / "models/model")
    with torch.no_grad():
        proba = torch.sigmoid(model(torch.from_numpy(preprocessor.transform(test)))).numpy()
    y = (test[small_params.dataset.label] == small_params.dataset.positive_class).to_numpy()
    assert roc_auc_score(y, proba) > 0.85
    # ...and it is the best epoch's: its validation loss is the one the workers reported.
    val = pd.read_parquet(prepared["val"])
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocessor.transform(val)))
    y_val = torch.from_numpy(target_vector(val, small_params.dataset))
    val_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_val).item()
    assert val_loss == pytest.approx(summary["best_val_loss"], abs=1e-4)
    assert summary["best_val_loss"] == min(m.value for m in history)
    assert json.loads((tmp_path / "models/mlflow_run.json").read_text())["run_id"] == ref.run_id
    # Ray's report callback saves each epoch in the temp dir first; nothing of it stays there.
    leftovers = list(Path(tempfile.gettempdir()).glob(f"lightning_checkpoints-*{ref.run_id}*"))
    assert leftovers == []


def test_workers_without_the_servers_credentials_leave_nothing_missing_from_the_run(
    local_ray, prepared, small_params, tmp_path, monkeypatch
):
    """A worker node without the tracking server's credentials cannot log the epochs or tag
    the run; the driver, which has them, logs what the worker could not. Here the workers
    lack them because the Ray instance (whose environment they inherit) started before the
    driver got them; the server runs MLflow's basic-auth app."""
    with driver_only_credentials(tmp_path, monkeypatch):
        ref = train_with_ray(small_params, prepared, tmp_path)
        run = mlflow.get_run(ref.run_id)
        history = mlflow.MlflowClient().get_metric_history(ref.run_id, "val_loss")
    server_log = (tmp_path / "server/server.log").read_text()
    # The worker really was refused: its tags and epochs came back 401 from the server.
    assert '"POST /api/2.0/mlflow/runs/log-batch HTTP/1.1" 401' in server_log
    assert run.info.status == "FINISHED"
    summary = json.loads((tmp_path / "metrics/train.json").read_text())
    assert [m.step for m in history] == list(range(summary["epochs_run"]))
    assert {
        DEVICE_TAG: "cpu",
        BACKEND_TAG: "gloo",
        PRECISION_TAG: "32-true",
        WORLD_SIZE_TAG: "2",
        DETERMINISTIC_TAG: "true",
        LIGHTNING_TAG: pl.__name__,
    }.items() <= run.data.tags.items()


def test_deterministic_off_reaches_the_workers(local_ray, prepared, small_params, mlflow_store, tmp_path):
    params = shrink_params(small_params, train={"deterministic": False, "num_workers": 1, "max_epochs": 1})
    ref = train_with_ray(params, prepared, tmp_path)
    tags = mlflow.get_run(ref.run_id).data.tags
    assert tags[DETERMINISTIC_TAG] == "false"
    assert tags[WORLD_SIZE_TAG] == "1"


def test_gpu_request_without_gpu_fails_fast_and_marks_the_run_failed(
    local_ray, prepared, small_params, mlflow_store, tmp_path
):
    if ray.cluster_resources().get("GPU", 0) >= 1:
        pytest.skip("this machine has a GPU")
    params = shrink_params(small_params, train={"use_gpu": True, "num_workers": 1})
    with pytest.raises(TrainingError, match=r"use_gpu is true .* 0 GPU"):
        train_with_ray(params, prepared, tmp_path)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"], "a failed training never stays RUNNING"
    assert not (tmp_path / "models/mlflow_run.json").exists(), "no run reference for a failed run"
    assert not np.any([p.name == "model.safetensors" for p in tmp_path.rglob("*")])


def test_a_failure_after_the_new_model_is_written_leaves_no_stale_run_reference(
    local_ray, prepared, small_params, mlflow_store, tmp_path, monkeypatch
):
    # A reference from an earlier training beside a model that is no longer its model would
    # send register to the wrong run; after the failure the stage has no reference at all.
    stale = tracking.RunRef(run_id="0" * 32, experiment_id="0", tracking_uri="sqlite:///old.db")
    stale.save(tmp_path / "models/mlflow_run.json")

    save_model = train_stage_module.save_model

    def save_then_fail(*args, **kwargs):
        save_model(*args, **kwargs)
        raise OSError("No space left on device (injected after the model was written)")

    monkeypatch.setattr(train_stage_module, "save_model", save_then_fail)
    params = shrink_params(small_params, train={"num_workers": 1, "max_epochs": 1})
    with pytest.raises(OSError, match="No space left"):
        train_with_ray(params, prepared, tmp_path)
    assert (tmp_path / "models/model/model.safetensors").exists(), "the new model was written"
    assert not (tmp_path / "models/mlflow_run.json").exists(), "the old run's reference is gone"
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]
