"""Hyperparameter search with Ray Tune: the train stage's own training function per trial,
ASHA early stopping on val_loss, one MLflow child run per trial under one parent run.

Each trial is a ``TorchTrainer`` (``training.trainer.train_distributed``) run from a Tune
function trainable, the layout Ray Train V2 supports; ``TuneReportCallback`` forwards every
epoch's report to Tune, so ASHA sees val_loss per epoch and can stop a trailing trial. The
driver writes the child runs (``search_runs``); trials only train.
"""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from fairtrain.config import Params, TrainConfig
from fairtrain.errors import ConfigError, TrainingError
from fairtrain.search_runs import (
    FAILED_TRIALS_TAG,
    TRIAL_TAG,
    StopRecordingASHA,
    TrialRuns,
    close_trial_runs,
    error_text,
)
from fairtrain.training.trainer import TrainingData, train_distributed

log = logging.getLogger(__name__)


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the space's values, in a stable order."""
    keys = list(space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(space[k] for k in keys))]


def trial_params(params: Params, overrides: dict[str, Any]) -> TrainConfig:
    raw = params.train.model_dump()
    raw.update(overrides)
    raw.update(num_workers=params.tune.workers_per_trial, max_epochs=params.tune.max_epochs)
    return TrainConfig.model_validate(raw)


def _refusal(params: Params, overrides: dict[str, Any]) -> str | None:
    """Why the train section with ``overrides`` is not valid, or None when it is."""
    try:
        trial_params(params, overrides)
    except ValidationError as error:
        return "; ".join(e["msg"] for e in error.errors())
    return None


def check_space(params: Params, source: str = "params.yaml") -> None:
    """Fail before any trial starts when a value of ``tune.space`` is not a valid train value,
    naming the key and the values (otherwise the trial holding it would fail mid-search)."""
    space = params.tune.space
    if not space:
        raise ConfigError(f"{source}: tune.space is empty: name at least one train key and its values")
    problems = [
        f"tune.space.{key}: {value!r} is not a valid train.{key} ({reason})"
        for key, values in space.items()
        for value in values
        if (reason := _refusal(params, {key: value}))
    ]
    if not problems:  # each value is valid alone; a check across keys may refuse a combination
        problems = [
            f"tune.space combination {overrides} is not a valid train section: {reason}"
            for overrides in grid(space)
            if (reason := _refusal(params, overrides))
        ]
    if problems:
        raise ConfigError(f"{source}: " + "\n".join(problems))


def _tag_execution(tracking_uri: str, experiment_id: str, trial_id: str, tags: dict[str, str]) -> None:
    """Best effort, from the trial's process: the execution tags on its run, which only the
    trial learns (from rank 0). Without the server's credentials there it logs a warning."""
    try:
        client = MlflowClient(tracking_uri)
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'")
        for run in runs:
            for key, value in tags.items():
                client.set_tag(run.info.run_id, key, value)
    except Exception as error:
        log.warning("trial %s could not tag its MLflow run with where it trained: %s", trial_id, error)


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

    parent = mlflow.active_run()
    if parent is None:
        raise TrainingError("run_search needs an active MLflow run to hang the trials under")
    parent_id = parent.info.run_id
    check_space(params)
    space = params.tune.space

    def describe(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        overrides = {k: config[k] for k in space}
        name = "trial-" + "-".join(f"{k}={v}" for k, v in overrides.items())
        train = trial_params(params, overrides).model_dump(mode="json")
        return name, {f"train.{k}": v for k, v in train.items()}

    def trial(config: dict[str, Any]) -> None:
        trial_id = tune.get_context().get_trial_id()
        with tempfile.TemporaryDirectory() as out:
            outcome = train_distributed(
                data,
                trial_params(params, {k: config[k] for k in space}),
                Path(out),
                storage=storage,
                name=f"tune-{parent_id[:8]}-{trial_id}",
                model_config=model_config,
                callbacks=[TuneReportCallback()],
            )
        _tag_execution(tracking_uri, experiment_id, trial_id, outcome.tags)

    runs = TrialRuns(MlflowClient(tracking_uri), experiment_id, parent_id, describe)
    scheduler = StopRecordingASHA(
        # One beyond the last epoch, so that ASHA never stops a trial for reaching max_t: a
        # trial that ran all its epochs ends by returning, after Ray Train has shut its worker
        # group down. Stopped at its last report instead, the trial was torn down while its
        # Train controller was still running; once that controller asked for a new worker
        # group as it died, and the group's CPU stayed reserved so the next trial waited
        # forever. The rungs before the last epoch are the same.
        max_t=params.tune.max_epochs + 1,
        grace_period=min(params.tune.grace_period, params.tune.max_epochs),
        reduction_factor=params.tune.reduction_factor,
    )
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 0.1}),  # the trial only waits; its workers hold the CPUs
        param_space={k: tune.grid_search(v) for k, v in space.items()},
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            num_samples=params.tune.num_samples,
            max_concurrent_trials=params.tune.max_concurrent_trials,
            scheduler=scheduler,
        ),
        run_config=tune.RunConfig(
            name=f"tune-{parent_id[:8]}", storage_path=str(storage), verbose=0, callbacks=[runs]
        ),
    )
    try:
        results = tuner.fit()
    except BaseException:
        # The search itself failed or was interrupted: still no child run stays RUNNING, and a
        # failure to close them does not hide the search's own error.
        try:
            close_trial_runs(runs.client, runs.runs, [], scheduler.stopped)
        except Exception as error:
            log.warning("could not close the trials' MLflow runs: %s", error)
        raise
    close_trial_runs(runs.client, runs.runs, results, scheduler.stopped)
    # Tune ends a search it got Ctrl-C in by returning, not raising (its results then count the
    # interrupted trial as terminated and leave out those never started): the best trial would
    # be the best of a partial search.
    expected = len(grid(space)) * params.tune.num_samples
    ended = sum(run.outcome is not None for run in runs.runs.values())
    if ended < expected:
        log.warning("the search stopped with %d of %d trials run to their end", ended, expected)
        raise KeyboardInterrupt(f"search interrupted after {ended} of {expected} trials")
    failed = [r for r in results if r.error is not None]
    for result in failed:
        # Ray's own output above has the traceback; the trial's run holds the error as a tag.
        log.warning("trial %s failed: %s", describe(result.config)[0], _first_line(result.error))
    mlflow.set_tag(FAILED_TRIALS_TAG, str(len(failed)))
    best = best_trial([r for r in results if r.error is None])
    if best is None:
        why = f"; the first: {_first_line(failed[0].error)}" if failed else ""
        raise TrainingError(
            f"no trial reported a validation loss ({len(failed)} of {len(results)} failed{why})"
        )
    result, best_val_loss = best
    overrides = {k: result.config[k] for k in space}
    summary = {
        "best_overrides": overrides,
        "best_val_loss": best_val_loss,
        "trials": len(results),
        "stopped_early": len(scheduler.stopped),
        "failed": len(failed),
    }
    mlflow.log_params({f"best.{k}": v for k, v in overrides.items()})
    mlflow.log_metric("best_val_loss", best_val_loss)
    return summary


def _first_line(error: BaseException) -> str:
    return error_text(error).splitlines()[0]


def best_trial(results: list[Any]) -> tuple[Any, float] | None:
    """The result with the lowest val_loss any of its epochs reported, and that loss; None
    when none reported one. Callers pass only trials that did not fail: a trial that crashed
    (out of memory with its batch size, a diverging rate) must not become the config to use,
    though Tune's own ``get_best_result`` would pick it from the epochs it got through."""
    losses = []
    for result in results:
        frame = result.metrics_dataframe
        if frame is not None and "val_loss" in frame and frame["val_loss"].notna().any():
            losses.append((float(frame["val_loss"].min()), len(losses), result))
    if not losses:
        return None
    loss, _, result = min(losses, key=lambda item: item[:2])  # ties: the earlier result
    return result, loss


def write_back_best(params_path: Path, summary: dict[str, Any]) -> None:
    """Write a search's best train keys into params.yaml, unless a trial failed: the failed
    trial might have been the best one, and a rerun decides that, not a guess."""
    if summary["failed"]:
        raise TrainingError(
            f"{summary['failed']} of {summary['trials']} trials failed (their errors are above and "
            f"in their MLflow runs), so {params_path} is left unchanged; the best of the others was "
            f"{summary['best_overrides']}: rerun the search, or set those train keys by hand"
        )
    write_back(params_path, summary["best_overrides"])


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
