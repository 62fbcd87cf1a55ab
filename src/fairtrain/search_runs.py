"""The search's MLflow child runs, written by the search's driver alone.

A Tune callback opens a trial's child run when the trial starts and logs each epoch as Tune
receives it; a scheduler (ASHA) records which trials it stopped; after the search
``close_trial_runs`` logs what is still missing and gives every run its status and end time.

Trials and their workers need no access to the tracking server. On a cluster the nodes that
run them may lack its credentials: the driver's environment does not travel to them, and
secrets put into a Ray runtime environment would show in Ray's dashboard.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from fairtrain import tracking
from fairtrain.errors import TrackingError

log = logging.getLogger(__name__)

TRIAL_TAG = "fairtrain.tune.trial_id"
ERROR_TAG = "fairtrain.tune.error"
STOPPED_TAG = "fairtrain.tune.stopped_early"
FAILED_TRIALS_TAG = "fairtrain.tune.failed_trials"  # on the parent run: how many trials raised


class StopRecordingASHA(ASHAScheduler):
    """ASHA that remembers the trials it stopped: Tune reports an ASHA stop and a trial that
    returned by itself alike (both complete, both with ``done``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return action


@dataclass
class TrialRun:
    run_id: str
    logged_epochs: set[int] = field(default_factory=set)
    outcome: str | None = None  # "completed" or "errored", once Tune says so
    ended_ms: int | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrialRuns(Callback):
    """Tune callback, in the driver: one child run of ``parent_id`` per trial, opened when the
    trial starts, with its train params (``describe(config)`` gives the run name and params)
    and every epoch's metrics as they arrive. Logging an epoch may fail (the server is briefly
    unreachable): the search goes on and ``close_trial_runs`` logs it afterwards."""

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        parent_id: str,
        describe: Callable[[dict], tuple[str, dict[str, Any]]],
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.describe = describe
        self.runs: dict[str, TrialRun] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.runs:  # Tune restarted the trial: it keeps its run
            return
        name, params = self.describe(trial.config)
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": self.parent_id, "fairtrain.stage": "tune", TRIAL_TAG: trial.trial_id},
        )
        self.runs[trial.trial_id] = TrialRun(run.info.run_id)
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self.runs.get(trial.trial_id)
        if run is None or "epoch" not in result:
            return
        epoch = int(result["epoch"])
        if epoch in run.logged_epochs:  # a restarted worker group reports an epoch again
            return
        metrics = [
            Metric(key, float(result[key]), _now_ms(), epoch)
            for key in tracking.EPOCH_METRICS
            if isinstance(result.get(key), numbers.Real)
        ]
        try:
            self.client.log_batch(run.run_id, metrics=metrics)
        except Exception as error:  # logged again after the search, from Tune's record
            log.warning("could not log epoch %d of trial %s to MLflow: %s", epoch, trial.trial_id, error)
            return
        run.logged_epochs.add(epoch)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "completed")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "errored")

    def _end(self, trial: Any, outcome: str) -> None:
        run = self.runs.get(trial.trial_id)
        if run is not None:
            run.outcome, run.ended_ms = outcome, _now_ms()


def error_text(error: BaseException) -> str:
    """``Type: message`` of what the trial raised (Ray wraps it in a ``RayTaskError``)."""
    cause = getattr(error, "cause", None) or error
    # Ray's reason for a dead worker comes after some 700 characters of worker details; MLflow
    # takes tag values of up to 8,000.
    return f"{type(cause).__name__}: {cause}"[:4000]


def close_trial_runs(
    client: MlflowClient,
    runs: dict[str, TrialRun],
    results: Iterable[Any],
    stopped: set[str],
) -> None:
    """Give each trial's run the epochs it lacks, its best val_loss, its status and end time:
    FAILED (tag ``ERROR_TAG``) when the trial raised; KILLED with tag ``STOPPED_TAG`` when
    ASHA stopped it; FINISHED when it completed otherwise (all epochs, or early stopping);
    KILLED when the search ended before the trial did. ``results`` are Tune's, one per trial
    (metrics with ``trial_id``, ``error``, ``metrics_dataframe``)."""
    by_trial = {(r.metrics or {}).get("trial_id"): r for r in results}
    problems = []
    for trial_id, run in runs.items():
        try:  # one run the store refuses must not leave the runs after it RUNNING
            _close_trial_run(client, run, by_trial.get(trial_id), trial_id in stopped)
        except Exception as error:
            problems.append(f"trial {trial_id} (run {run.run_id}): {error}")
    if problems:
        raise TrackingError("could not close every trial's MLflow run: " + "; ".join(problems))


def _close_trial_run(client: MlflowClient, run: TrialRun, result: Any, stopped: bool) -> None:
    error = getattr(result, "error", None)
    if error is not None or run.outcome == "errored":
        status = "FAILED"
    elif stopped or run.outcome != "completed":
        status = "KILLED"
    else:
        status = "FINISHED"
    try:
        frame = getattr(result, "metrics_dataframe", None)
        if frame is not None and "val_loss" in frame and len(frame):
            client.log_metric(run.run_id, "best_val_loss", float(frame["val_loss"].min()))
            if "epoch" in frame:
                tracking.log_missing_epochs(client, run.run_id, epoch_rows(frame))
        if status == "FAILED":
            client.set_tag(run.run_id, ERROR_TAG, error_text(error) if error is not None else "unknown error")
        elif stopped:
            client.set_tag(run.run_id, STOPPED_TAG, "true")
    finally:  # the status even when the details could not be logged
        client.set_terminated(run.run_id, status, end_time=run.ended_ms or _now_ms())


def epoch_rows(frame: pd.DataFrame) -> list[dict[str, float]]:
    """One row per reported epoch (the last report of an epoch a restarted worker group ran
    twice) with the metrics rank 0 logs, from a trial's Tune metrics frame."""
    columns = ["epoch", *(k for k in tracking.EPOCH_METRICS if k in frame)]
    rows = frame[columns].dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last")
    # NaN (a metric missing from one report) is left out rather than logged.
    return [{k: float(v) for k, v in row.items() if pd.notna(v)} for row in rows.to_dict("records")]
