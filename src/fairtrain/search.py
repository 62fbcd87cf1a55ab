"""Hyperparameter search with Ray Tune: the train stage's own training function per trial,
ASHA early stopping on val_loss, one MLflow child run per trial under one parent run.

Each trial is a ``TorchTrainer`` (``training.trainer.train_distributed``) run from a Tune
function trainable, the layout Ray Train V2 supports; ``TuneReportCallback`` forwards every
epoch's report to Tune, so ASHA sees val_loss per epoch and can stop a trailing trial.
"""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.config import Params, TrainConfig
from fairtrain.errors import ConfigError, TrainingError
from fairtrain.training.trainer import TrainingData, train_distributed

log = logging.getLogger(__name__)

TRIAL_TAG = "fairtrain.tune.trial_id"
COMPLETED_TAG = "fairtrain.tune.completed"
ERROR_TAG = "fairtrain.tune.error"
STOPPED_TAG = "fairtrain.tune.stopped_early"


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the space's values, in a stable order."""
    keys = list(space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(space[k] for k in keys))]


def trial_params(params: Params, overrides: dict[str, Any]) -> TrainConfig:
    raw = params.train.model_dump()
    raw.update(overrides)
    raw.update(num_workers=params.tune.workers_per_trial, max_epochs=params.tune.max_epochs)
    return TrainConfig.model_validate(raw)


def run_search(
    params: Params,
    data: TrainingData,
    model_config: dict,
    experiment_id: str,
    tracking_uri: str,
    storage: str | Path,
) -> dict[str, Any]:
    """Run the grid under ASHA; returns the best trial's overrides and metrics. Needs a Ray
    session and an active MLflow parent run."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler

    parent = mlflow.active_run()
    if parent is None:
        raise TrainingError("run_search needs an active MLflow run to hang the trials under")
    parent_id = parent.info.run_id
    space = params.tune.space
    if not space:
        raise ConfigError("params.yaml tune.space is empty: name at least one train key and its values")

    def trial(config: dict[str, Any]) -> None:
        overrides = {k: config[k] for k in space}
        train_params = trial_params(params, overrides)
        client = MlflowClient(tracking_uri)
        name = "trial-" + "-".join(f"{k}={v}" for k, v in overrides.items())
        trial_id = tune.get_context().get_trial_id()
        child = client.create_run(
            experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": parent_id, "fairtrain.stage": "tune", TRIAL_TAG: trial_id},
        )
        run_id = child.info.run_id
        for key, value in train_params.model_dump(mode="json").items():
            client.log_param(run_id, f"train.{key}", value)
        # The trial never sets its run's status: a trial ASHA stops may be torn down at any
        # point, even mid-write, so the driver closes every child from Tune's verdict instead.
        with tempfile.TemporaryDirectory() as out:
            try:
                train_distributed(
                    data,
                    train_params,
                    Path(out),
                    run_id=run_id,
                    tracking_uri=tracking_uri,
                    storage=storage,
                    name=f"tune-{parent_id[:8]}-{trial_id}",
                    model_config=model_config,
                    callbacks=[TuneReportCallback()],
                )
            except BaseException as error:
                client.set_tag(run_id, ERROR_TAG, f"{type(error).__name__}: {error}"[:500])
                raise
        # Reached when the training ran to its end (ASHA's max_t lies one epoch beyond it, see
        # below) or stopped early by itself. The driver closes the run either way.
        client.set_tag(run_id, COMPLETED_TAG, "true")

    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 0.1}),  # the trial only waits; its workers hold the CPUs
        param_space={k: tune.grid_search(v) for k, v in space.items()},
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            num_samples=params.tune.num_samples,
            max_concurrent_trials=params.tune.max_concurrent_trials,
            scheduler=ASHAScheduler(
                # One beyond the last epoch, so that ASHA never stops a trial for reaching
                # max_t: a trial that ran all its epochs ends by returning, after Ray Train has
                # shut its worker group down. Stopped at its last report instead, the trial was
                # torn down while its Train controller was still running; once that controller
                # asked for a new worker group as it died, and the group's CPU stayed reserved
                # so the next trial waited forever. The rungs before the last epoch are the same.
                max_t=params.tune.max_epochs + 1,
                grace_period=min(params.tune.grace_period, params.tune.max_epochs),
                reduction_factor=params.tune.reduction_factor,
            ),
        ),
        run_config=tune.RunConfig(name=f"tune-{parent_id[:8]}", storage_path=str(storage), verbose=0),
    )
    results = tuner.fit()
    close_trial_runs(results, params.tune.max_epochs, experiment_id, parent_id, tracking_uri)
    best = results.get_best_result(metric="val_loss", mode="min", scope="all")
    if best is None or best.metrics is None:
        raise TrainingError("no trial reported a validation loss")
    frame = best.metrics_dataframe
    overrides = {k: best.config[k] for k in space}
    summary = {
        "best_overrides": overrides,
        "best_val_loss": float(frame["val_loss"].min())
        if frame is not None
        else float(best.metrics["val_loss"]),
        "trials": len(results),
        "stopped_early": sum(
            1
            for r in results
            if r.metrics and r.metrics.get("training_iteration", 0) < params.tune.max_epochs
        ),
    }
    mlflow.log_params({f"best.{k}": v for k, v in overrides.items()})
    mlflow.log_metric("best_val_loss", summary["best_val_loss"])
    return summary


def close_trial_runs(
    results: Iterable[Any], max_epochs: int, experiment_id: str, parent_id: str, tracking_uri: str
) -> None:
    """Give every child run its final status from Tune's outcome for its trial, and its best
    val_loss: FAILED when Tune recorded an error; FINISHED when the trial reported all
    ``max_epochs`` epochs or its function returned (early stopping); otherwise KILLED and
    tagged as stopped early by ASHA. Epochs Tune received but the run lacks (the trial's
    workers could not reach the tracking server) are logged here, as the train stage does.

    Tune tears a trial down as soon as ASHA stops it, possibly mid-write, so the trials set
    no status themselves:
    the driver is the only writer and no run is left RUNNING or overwritten later.
    """
    client = MlflowClient(tracking_uri)
    by_trial = {(r.metrics or {}).get("trial_id"): r for r in results}
    children = f"tags.`mlflow.parentRunId` = '{parent_id}'"
    for run in client.search_runs([experiment_id], filter_string=children):
        run_id, tags = run.info.run_id, run.data.tags
        result = by_trial.get(tags.get(TRIAL_TAG))
        epochs = (result.metrics or {}).get("training_iteration", 0) if result is not None else 0
        frame = getattr(result, "metrics_dataframe", None)
        if frame is not None and "val_loss" in frame and len(frame):
            client.log_metric(run_id, "best_val_loss", float(frame["val_loss"].min()))
            if "epoch" in frame:
                tracking.log_missing_epochs(client, run_id, epoch_rows(frame))
        if (result is not None and result.error is not None) or (result is None and ERROR_TAG in tags):
            status = "FAILED"  # a trial that failed before its first report has no result metrics
        elif epochs >= max_epochs or tags.get(COMPLETED_TAG) == "true":
            status = "FINISHED"
        else:
            status = "KILLED"
            client.set_tag(run_id, STOPPED_TAG, "true")
        client.set_terminated(run_id, status)


def epoch_rows(frame: pd.DataFrame) -> list[dict[str, float]]:
    """One row per reported epoch (the last report of an epoch a restarted worker group ran
    twice) with the metrics rank 0 logs, from a trial's Tune metrics frame."""
    columns = ["epoch", *(k for k in tracking.EPOCH_METRICS if k in frame)]
    rows = frame[columns].dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last")
    # NaN (a metric missing from one report) is left out rather than logged.
    return [{k: float(v) for k, v in row.items() if pd.notna(v)} for row in rows.to_dict("records")]


def write_back(params_path: Path, overrides: dict[str, Any]) -> None:
    """Set ``train.<key>: value`` in params.yaml for each override, keeping comments and
    layout (line edits inside the ``train:`` block, then a full re-validation)."""
    import yaml

    from fairtrain.config import params_from_dict
    from fairtrain.io import atomic_path

    lines = params_path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "train:"), None)
    if start is None:
        raise ConfigError(f"{params_path}: no top-level train: section")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\S", lines[i])), len(lines))
    for key, value in overrides.items():
        pattern = re.compile(rf"^(  {re.escape(key)}:\s*)([^#\n]*?)(\s*(#.*)?)$")
        rendered = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        for i in range(start + 1, end):
            match = pattern.match(lines[i].rstrip("\n"))
            if match:
                lines[i] = f"{match.group(1)}{rendered}{match.group(3)}\n"
                break
        else:
            lines.insert(end, f"  {key}: {rendered}\n")
            end += 1
    text = "".join(lines)
    params_from_dict(yaml.safe_load(text), source=str(params_path))  # still valid
    with atomic_path(params_path) as staging:
        Path(staging).write_text(text, encoding="utf-8")
