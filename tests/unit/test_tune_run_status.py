"""The search's driver closes every trial's child run from Tune's verdict and logs the epochs
the run lacks (real SQLite store; the Tune results are plain records with the three fields the
driver reads: metrics, error and the metrics frame, its columns named as in a real search)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow import MlflowClient

from fairtrain.search import COMPLETED_TAG, ERROR_TAG, STOPPED_TAG, TRIAL_TAG, close_trial_runs


@dataclass
class TrialResult:
    metrics: dict
    error: Exception | None = None
    metrics_dataframe: pd.DataFrame | None = None


def test_each_child_gets_the_status_tune_gave_its_trial(mlflow_store):
    client = MlflowClient(mlflow_store)
    experiment_id = client.create_experiment("tune")
    parent = client.create_run(experiment_id).info.run_id

    def child(trial_id: str, **tags: str) -> str:
        base = {"mlflow.parentRunId": parent, TRIAL_TAG: trial_id}
        return client.create_run(experiment_id, tags={**base, **tags}).info.run_id

    completed = child("t1", **{COMPLETED_TAG: "true"})  # ended early by its own patience
    last_epoch = child("t5")  # torn down by Tune right after its last epoch's report
    stopped = child("t2", **{ERROR_TAG: "TrainingError: aborted"})  # torn down by ASHA
    crashed = child("t3", **{ERROR_TAG: "ValueError: bad"})
    silent = child("t4", **{ERROR_TAG: "ValueError: before any report"})
    unrelated = client.create_run(experiment_id).info.run_id
    client.log_metric(last_epoch, "val_loss", 0.5, step=0)  # the trial's worker logged only epoch 0
    results = [
        TrialResult({"trial_id": "t1", "training_iteration": 2}),
        TrialResult(
            {"trial_id": "t5", "training_iteration": 3},
            metrics_dataframe=pd.DataFrame(
                {"epoch": [0, 1, 2], "val_loss": [0.5, 0.4, 0.45], "train_loss": [0.6, 0.5, 0.4], "step": 9}
            ),
        ),
        TrialResult({"trial_id": "t2", "training_iteration": 1}),
        TrialResult({"trial_id": "t3"}, error=ValueError("bad")),
        TrialResult({}, error=ValueError("before any report")),
    ]

    close_trial_runs(results, 3, experiment_id, parent, mlflow_store)

    def status(run_id: str) -> str:
        return client.get_run(run_id).info.status

    assert status(completed) == "FINISHED" and status(last_epoch) == "FINISHED"
    assert client.get_run(last_epoch).data.metrics["best_val_loss"] == 0.4
    assert sorted(m.step for m in client.get_metric_history(last_epoch, "val_loss")) == [0, 1, 2]
    assert status(stopped) == "KILLED"
    assert client.get_run(stopped).data.tags[STOPPED_TAG] == "true"
    assert status(crashed) == "FAILED" and status(silent) == "FAILED"
    assert STOPPED_TAG not in client.get_run(crashed).data.tags
    assert status(unrelated) == "RUNNING", "runs outside the search are left alone"


def test_the_driver_logs_the_epochs_a_trials_workers_could_not(mlflow_store):
    client = MlflowClient(mlflow_store)
    experiment_id = client.create_experiment("tune")
    parent = client.create_run(experiment_id).info.run_id
    run_id = client.create_run(
        experiment_id, tags={"mlflow.parentRunId": parent, TRIAL_TAG: "t1", COMPLETED_TAG: "true"}
    ).info.run_id
    client.log_metric(run_id, "val_loss", 0.5, step=0)  # logged by the worker before it lost the server
    frame = pd.DataFrame(
        # A restarted worker group reported epoch 1 twice; Tune's own columns are not metrics here.
        {
            "epoch": [0, 1, 1, 2],
            "val_loss": [0.5, 0.41, 0.4, 0.45],
            "val_auc": [0.8, 0.85, 0.86, float("nan")],
            "training_iteration": [1, 2, 3, 4],
        }
    )

    close_trial_runs(
        [TrialResult({"trial_id": "t1", "training_iteration": 4}, metrics_dataframe=frame)],
        3,
        experiment_id,
        parent,
        mlflow_store,
    )

    def curve(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    assert curve("val_loss") == [(0, 0.5), (1, 0.4), (2, 0.45)], (
        "each epoch once, the last report of a rerun one"
    )
    assert curve("val_auc") == [(1, 0.86)], "epoch 0 was already logged; a missing value is not logged as NaN"
    assert curve("training_iteration") == [] and curve("epoch") == []
