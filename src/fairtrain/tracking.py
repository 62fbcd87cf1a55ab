"""MLflow wiring: which store, which experiment, and the one run that every stage shares.

The train stage opens the run and records its id in a small JSON file (a DVC output);
evaluate, register and report reopen that run, so one row in the MLflow UI holds the whole
story of a model. Nothing here runs at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from fairtrain.errors import TrackingError
from fairtrain.io import read_json, write_json

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_STORE_FILE = "mlflow.db"


def resolve_tracking_uri(project_root: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else an SQLite store in the project root.

    The SQLite path is made absolute so Ray workers, whose working directory differs from
    the driver's, write to the same file.
    """
    from_env = os.environ.get(TRACKING_URI_ENV)
    if from_env:
        return from_env
    root = Path(project_root or Path.cwd()).resolve()
    return f"sqlite:///{root / DEFAULT_STORE_FILE}"


def configure(experiment: str, tracking_uri: str | None = None) -> str:
    """Point MLflow at the store and experiment; returns the experiment id."""
    uri = tracking_uri or resolve_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.set_experiment(experiment).experiment_id
    except MlflowException as error:
        raise TrackingError(f"cannot use MLflow experiment {experiment!r} at {uri}: {error}") from None


@dataclass(frozen=True)
class RunRef:
    """What later stages need to find the training run again."""

    run_id: str
    experiment_id: str
    tracking_uri: str

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> RunRef:
        try:
            payload = read_json(path)
            return cls(**{k: str(payload[k]) for k in ("run_id", "experiment_id", "tracking_uri")})
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TrackingError(f"{path}: not a run reference written by the train stage ({error})") from None


@contextmanager
def resume_run(ref: RunRef) -> Iterator[mlflow.ActiveRun]:
    """Reopen the training run in the current store; fail clearly if it is not there."""
    uri = resolve_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.get_run(ref.run_id)
    except MlflowException:
        raise TrackingError(
            f"MLflow run {ref.run_id} is not in the tracking store {uri} (the train stage recorded "
            f"it in {ref.tracking_uri}); set {TRACKING_URI_ENV} to that store or rerun `dvc repro train`"
        ) from None
    with mlflow.start_run(run_id=ref.run_id) as run:
        yield run


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name from free-text parts such as group names."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /")
    return "/".join("".join(ch if ch in allowed else "_" for ch in str(p)) for p in parts)
