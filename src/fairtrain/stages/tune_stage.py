"""The search (``pipelines/tune.py``, not a DVC stage): one parent MLflow run, a Ray Tune
search over params.yaml ``tune.space``, the best train keys returned."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.search import check_space, run_search
from fairtrain.stages.train_stage import close_runs_of_dead_drivers, training_run
from fairtrain.stages.training_inputs import ModelInputs, features_and_target, read_training_inputs
from fairtrain.training.driver_guard import DRIVER_TAG, driver_tag
from fairtrain.training.ray_runtime import ray_session
from fairtrain.training.trainer import TrainingData, configured_storage


def tune_stage(
    params: Params, train_path: Path, val_path: Path, preprocessor_path: Path, source: str = "params.yaml"
) -> dict[str, Any]:
    """Search with the prepared splits; returns the search's summary with ``parent_run_id``.
    ``source`` names the params file in errors."""
    check_space(params, source)  # before any data is read, a run is opened or Ray is started
    preprocessor, train, val = read_training_inputs(train_path, val_path, preprocessor_path, stage="tune")
    x_train, y_train = features_and_target(train, preprocessor, params)
    x_val, y_val = features_and_target(val, preprocessor, params)
    model_inputs = ModelInputs.of(preprocessor, y_train)  # each trial derives its own model options
    uri = tracking.resolve_tracking_uri()
    experiment_id = tracking.configure(params.tracking.experiment, uri)
    # The parent run is closed KILLED when interrupted (Ctrl-C, SIGTERM), FAILED on an error,
    # like a training's run; the storage goes last, after Ray has stopped writing to it.
    with (
        _search_storage() as storage,
        training_run(None, f"tune-{time.strftime('%Y%m%d-%H%M%S')}") as parent,
        ray_session(),
    ):
        mlflow.set_tags({"fairtrain.stage": "tune", DRIVER_TAG: driver_tag()})
        close_abandoned_searches(experiment_id, keep=parent.info.run_id)
        mlflow.log_dict(params.tune.model_dump(mode="json"), "tune/space.json")
        summary = run_search(
            params,
            TrainingData(x_train, y_train, x_val, y_val),
            model_inputs,
            experiment_id,
            uri,
            storage,
        )
    summary["parent_run_id"] = parent.info.run_id
    return summary


def close_abandoned_searches(experiment_id: str, keep: str | None = None) -> None:
    """Searches whose driver was killed (SIGKILL, a lost machine) left their parent run and
    the running trials' child runs RUNNING: close them KILLED (a live search is left alone)."""
    client = MlflowClient()
    for parent_id in close_runs_of_dead_drivers(experiment_id, "tags.`fairtrain.stage` = 'tune'", keep):
        for child in client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
        ):
            client.set_terminated(child.info.run_id, "KILLED")


@contextmanager
def _search_storage() -> Iterator[str | Path]:
    """Ray's storage for the trials' checkpoints and Tune's state: ``$FAIRTRAIN_RAY_STORAGE``
    when set (kept), else a temporary folder removed when the search ends however it ends.
    Nothing reads it afterwards: the trials' metrics are in MLflow, and a search is rerun, not
    resumed."""
    configured = configured_storage()
    if configured is not None:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="fairtrain-tune-", ignore_cleanup_errors=True) as folder:
        yield Path(folder)
