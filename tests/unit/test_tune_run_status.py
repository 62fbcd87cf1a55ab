"""The search's driver writes every trial's child run: opened by a real Tune callback hook,
epochs logged as Tune hands them over, and closed with the status Tune's outcome gives it
(real SQLite store; trials and Tune results are plain records with the fields the driver
reads, their columns named as in a real search)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pytest
from mlflow import MlflowClient
from ray.exceptions import RayTaskError

from fairtrain.errors import ConfigError, TrackingError
from fairtrain.search import best_trial, check_space
from fairtrain.search_runs import ERROR_TAG, STOPPED_TAG, TRIAL_TAG, TrialRuns, close_trial_runs


@dataclass
class Trial:
    trial_id: str
    config: dict = field(default_factory=dict)


@dataclass
class TrialResult:
    metrics: dict
    error: Exception | None = None
    metrics_dataframe: pd.DataFrame | None = None


def describe(config: dict) -> tuple[str, dict]:
    return f"trial-lr={config['learning_rate']}", {"train.learning_rate": config["learning_rate"]}


@pytest.fixture
def search(mlflow_store):
    client = MlflowClient(mlflow_store)
    experiment_id = client.create_experiment("tune")
    parent = client.create_run(experiment_id).info.run_id
    return client, TrialRuns(client, experiment_id, parent, describe), parent


def start(runs: TrialRuns, trial_id: str, rate: float = 0.01) -> str:
    runs.on_trial_start(0, [], Trial(trial_id, {"learning_rate": rate}))
    return runs.runs[trial_id].run_id


def test_a_trial_gets_a_child_run_with_its_params_and_live_epochs(search):
    client, runs, parent = search
    run_id = start(runs, "t1", 0.003)
    trial = Trial("t1")
    for epoch, loss in ((0, 0.5), (1, 0.4), (1, 0.39)):  # epoch 1 again: a restarted worker group
        runs.on_trial_result(
            0, [], trial, {"epoch": epoch, "val_loss": loss, "train_loss": 0.6, "done": False}
        )
    runs.on_trial_start(0, [], Trial("t1", {"learning_rate": 0.003}))  # Tune restarted the trial

    run = client.get_run(run_id)
    assert run.info.run_name == "trial-lr=0.003" and run.info.status == "RUNNING"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags[TRIAL_TAG] == "t1"
    assert run.data.params == {"train.learning_rate": "0.003"}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")] == [(0, 0.5), (1, 0.4)]
    assert client.get_metric_history(run_id, "done") == [], "only the epoch metrics are logged"
    assert len(runs.runs) == 1


def test_each_child_gets_the_status_tune_gave_its_trial(search):
    client, runs, _ = search
    ids = {t: start(runs, t) for t in ("finished", "early", "stopped", "crashed", "interrupted")}
    for trial_id in ("finished", "early", "stopped"):
        runs.on_trial_complete(0, [], Trial(trial_id))
    runs.on_trial_error(0, [], Trial("crashed"))
    wrapped = RayTaskError("trial", "Traceback ...", ValueError("bad value"))
    results = [
        TrialResult({"trial_id": "finished", "training_iteration": 3}),
        TrialResult({"trial_id": "early", "training_iteration": 2}),  # its own early stopping
        TrialResult({"trial_id": "stopped", "training_iteration": 1}),
        TrialResult({"trial_id": "crashed"}, error=wrapped),
        TrialResult({"trial_id": "interrupted", "training_iteration": 1}),
    ]

    close_trial_runs(client, runs.runs, results, stopped={"stopped"})

    def run(trial_id: str):
        return client.get_run(ids[trial_id])

    assert run("finished").info.status == "FINISHED" and run("early").info.status == "FINISHED"
    assert run("stopped").info.status == "KILLED"
    assert run("stopped").data.tags[STOPPED_TAG] == "true"
    assert run("crashed").info.status == "FAILED"
    assert run("crashed").data.tags[ERROR_TAG] == "ValueError: bad value", "the trial's own error"
    assert run("interrupted").info.status == "KILLED", "the search ended before the trial did"
    assert STOPPED_TAG not in run("interrupted").data.tags | run("crashed").data.tags
    assert run("finished").info.end_time == runs.runs["finished"].ended_ms, "when Tune completed it"


def test_a_run_the_store_refuses_does_not_leave_the_others_running(search):
    client, runs, _ = search
    ids = {t: start(runs, t) for t in ("gone", "fine")}
    for trial_id in ids:
        runs.on_trial_complete(0, [], Trial(trial_id))
    client.delete_run(ids["gone"])  # deleted in the UI mid-search: the store refuses to update it
    frame = pd.DataFrame({"epoch": [0], "val_loss": [0.5]})
    results = [TrialResult({"trial_id": t}, metrics_dataframe=frame) for t in ids]

    with pytest.raises(TrackingError, match=f"trial gone \\(run {ids['gone']}\\)"):
        close_trial_runs(client, runs.runs, results, stopped=set())
    assert client.get_run(ids["fine"]).info.status == "FINISHED"


def test_the_driver_logs_the_epochs_it_missed_after_the_search(search):
    client, runs, _ = search
    run_id = start(runs, "t1")
    runs.on_trial_result(0, [], Trial("t1"), {"epoch": 0, "val_loss": 0.5})
    runs.on_trial_complete(0, [], Trial("t1"))
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
        client, runs.runs, [TrialResult({"trial_id": "t1"}, metrics_dataframe=frame)], stopped=set()
    )

    def curve(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    assert curve("val_loss") == [(0, 0.5), (1, 0.4), (2, 0.45)], (
        "each epoch once, the last report of a rerun one"
    )
    assert curve("val_auc") == [(1, 0.86)], "epoch 0 was already logged; a missing value is not logged as NaN"
    assert curve("training_iteration") == [] and curve("epoch") == []
    assert client.get_run(run_id).data.metrics["best_val_loss"] == 0.4


def test_a_space_value_that_is_not_a_valid_train_value_fails_before_the_search(params):
    bad = params.model_copy(
        update={"tune": params.tune.model_copy(update={"space": {"learning_rate": [0.01, -1.0]}})}
    )
    with pytest.raises(
        ConfigError, match=r"tune\.space\.learning_rate: -1\.0 is not a valid train\.learning_rate"
    ):
        check_space(bad)
    check_space(
        params.model_copy(update={"tune": params.tune.model_copy(update={"space": {"dropout": [0.1]}})})
    )


def test_float16_in_the_space_of_a_cpu_search_fails_before_the_search(params):
    # Each trial would otherwise fail alone once Ray placed it (params.train.use_gpu is false).
    space = {"precision": ["32-true", "16-mixed"]}
    bad = params.model_copy(update={"tune": params.tune.model_copy(update={"space": space})})
    with pytest.raises(ConfigError, match=r"tune\.space\.precision: '16-mixed' .*needs GPUs"):
        check_space(bad)


def test_the_best_trial_is_the_lowest_val_loss_of_any_epoch_and_ties_go_to_the_earlier():
    def result(name: str, losses: list[float]) -> TrialResult:
        frame = pd.DataFrame({"epoch": range(len(losses)), "val_loss": losses})
        return TrialResult({"trial_id": name}, metrics_dataframe=frame)

    early_best = result("a", [0.40, 0.30, 0.35])  # its best epoch, not its last, counts
    later = result("b", [0.32, 0.31])
    tie = result("c", [0.50, 0.30])
    no_loss = TrialResult({"trial_id": "d"}, metrics_dataframe=pd.DataFrame({"epoch": [0]}))
    nan = result("e", [float("nan")])
    assert best_trial([later, early_best, tie]) == (early_best, 0.30)
    assert best_trial([tie, early_best]) == (tie, 0.30)
    assert best_trial([no_loss, nan, later]) == (later, 0.31)
    assert best_trial([no_loss, nan, TrialResult({"trial_id": "f"})]) is None
