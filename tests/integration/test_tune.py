"""Ray Tune search end to end: 2 trials, 2 epochs, 4,000 rows, a real local Ray and MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest
import yaml

from fairtrain.config import load_params
from fairtrain.search import COMPLETED_TAG, grid, write_back
from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_grid_is_every_combination():
    assert grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]


def test_write_back_edits_train_keys_and_keeps_comments(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((PROJECT_ROOT / "params.yaml").read_text())
    write_back(path, {"learning_rate": 0.003, "hidden_sizes": [64, 32], "lr_schedule": "cosine"})
    text = path.read_text()
    assert "  learning_rate: 0.003" in text and "  hidden_sizes: [64, 32]" in text
    assert "# none | cosine | onecycle | plateau" in text, "comments survive"
    params = load_params(path)
    assert (params.train.learning_rate, params.train.hidden_sizes) == (0.003, [64, 32])
    assert params.evaluate == load_params(PROJECT_ROOT / "params.yaml").evaluate


def test_search_logs_each_trial_as_a_child_run_and_writes_the_best_back(prepared, small_params, tmp_path):
    raw = small_params.model_dump(mode="json", by_alias=True)
    raw["tune"] = {
        # The good rate first: trials run one at a time, so when the poor one reaches ASHA's
        # rung (epoch 1) there is a better result there and ASHA stops it.
        "space": {"learning_rate": [0.01, 0.0001]},
        "max_epochs": 2,
        "grace_period": 1,
        "workers_per_trial": 1,
    }
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)])
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [
            sys.executable, str(PROJECT_ROOT / "pipelines/tune.py"), "--params", str(params_file),
            "--train", str(prepared["train"]), "--val", str(prepared["val"]),
            "--preprocessor", str(prepared["preprocessor"]), "--write-params",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["trials"] == 2
    assert summary["stopped_early"] == 1, "ASHA stopped the trailing trial after its first epoch"
    # A learning rate of 0.0001 for 2 epochs cannot beat 0.01 on val_loss.
    assert summary["best_overrides"] == {"learning_rate": 0.01}
    assert load_params(params_file).train.learning_rate == 0.01

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(small_params.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_id == summary["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2, "one parent, one child per trial, nothing else"
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs), "no run left RUNNING"
    by_rate = {c.data.params["train.learning_rate"]: c for c in children}
    assert by_rate["0.01"].info.status == "FINISHED"
    # It ended by returning after its last epoch, not torn down by Tune at ASHA's max_t (which
    # once left its Train worker group's CPU reserved and hung the next trial).
    assert by_rate["0.01"].data.tags.get(COMPLETED_TAG) == "true"
    assert by_rate["0.0001"].info.status == "KILLED"
    assert by_rate["0.0001"].data.tags.get("fairtrain.tune.stopped_early") == "true"
    assert sorted(c.data.params["train.learning_rate"] for c in children) == ["0.0001", "0.01"]
    for child in children:
        assert client.get_metric_history(child.info.run_id, "val_loss"), "each trial logs its epochs"
    assert parent.data.params["best.learning_rate"] == "0.01"
