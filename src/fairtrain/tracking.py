"""MLflow wiring: which store, which experiment, and the one run that every stage shares.

The train stage opens the run and records its id in a small JSON file (a DVC output);
evaluate, register and report reopen that run, so one row in the MLflow UI holds the whole
story of a model. Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fairtrain.errors import TrackingError
from fairtrain.io import read_json, write_json

log = logging.getLogger(__name__)

# What rank 0 of a training logs to its run per epoch (step = epoch). Ray Train also reports
# all but the throughput to Ray, and so to Tune.
EPOCH_METRICS = ("train_loss", "val_loss", "val_auc", "samples_per_second")

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_STORE_FILE = "mlflow.db"
# MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) keep a stage waiting for
# many minutes when the server is down. These bound it to seconds for a refused connection
# and about a minute for a silent one; users can still set the variables themselves.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


# What a stage's user can do when the server is down. The `fairtrain` CLI writes nothing and
# runs no stage, so it passes its own advice to `configure_client`.
PIPELINE_RETRY_ADVICE = (
    "Outputs already written are kept; when the server is back, rerun `dvc repro` and only "
    f"the stages that did not finish will run (or unset {TRACKING_URI_ENV} to use the local store)."
)


# Where `dvc exp run --queue` / `--temp` runs each experiment: a copy of the repository in
# <project>/.dvc/tmp/exps/<tmpXXXX> (or exps/standalone/<tmpXXXX>), deleted afterwards.
DVC_EXPERIMENT_WORKSPACE = (".dvc", "tmp", "exps")


def default_store_root(cwd: str | Path) -> Path:
    """The folder whose ``mlflow.db`` is the default store: the working directory, or for a
    queued DVC experiment the project it was queued from. Its temporary copy is deleted when
    the experiment ends, and a store inside it would take the experiment's runs, registered
    versions and model card with it (and hide the registry's champion from its gates)."""
    path = Path(cwd).resolve()
    parts = path.parts
    width = len(DVC_EXPERIMENT_WORKSPACE)
    for start in range(len(parts) - width + 1):
        if parts[start : start + width] == DVC_EXPERIMENT_WORKSPACE:
            return Path(*parts[:start])
    return path


def resolve_tracking_uri(project_root: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else an SQLite store in the project root (see
    ``default_store_root``).

    The SQLite path is made absolute so Ray workers, whose working directory differs from
    the driver's, write to the same file.
    """
    from_env = os.environ.get(TRACKING_URI_ENV)
    if from_env:
        return from_env
    root = Path(project_root).resolve() if project_root else default_store_root(Path.cwd())
    return f"sqlite:///{root / DEFAULT_STORE_FILE}"


def configure_client(tracking_uri: str | None = None, unreachable_advice: str = PIPELINE_RETRY_ADVICE) -> str:
    """Point MLflow at the store with bounded HTTP retries; returns the URI. Fails clearly when
    a tracking server does not answer, ending with ``unreachable_advice``."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = tracking_uri or resolve_tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        initialise_sqlite_store(uri)
    ensure_reachable(uri, unreachable_advice)
    return uri


def initialise_sqlite_store(uri: str) -> None:
    """Create or migrate an SQLite store under an inter-process lock.

    MLflow creates and migrates the schema on first use; two pipelines starting together on a
    fresh ``mlflow.db`` would both run the migrations and one fails ("duplicate column
    name"). The lock makes the second wait until the first has finished.
    """
    database = Path(uri[len("sqlite:///") :].split("?", 1)[0])
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock", timeout=300):
        MlflowClient(uri).search_experiments(max_results=1)


def ensure_reachable(uri: str, advice: str = PIPELINE_RETRY_ADVICE) -> None:
    """One cheap request to a tracking server; a local SQLite store needs no check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # requests' and MLflow's errors alike mean "not usable now"
        first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise TrackingError(
            f"the MLflow tracking server at {uri} is not usable: {first_line}\n{advice}"
        ) from None


def configure(experiment: str, tracking_uri: str | None = None) -> str:
    """Point MLflow at the store and experiment; returns the experiment id."""
    uri = configure_client(tracking_uri)
    try:
        _create_outside_an_experiment_copy(experiment, uri)
        return mlflow.set_experiment(experiment).experiment_id
    except MlflowException as error:
        raise TrackingError(f"cannot use MLflow experiment {experiment!r} at {uri}: {error}") from None


def _create_outside_an_experiment_copy(experiment: str, uri: str) -> None:
    """In a DVC experiment's copy of the project, create a missing experiment with its
    artifacts in the project's mlruns/: MLflow would put them in ./mlruns, inside the copy
    that DVC deletes, and the runs' logged models (registered versions among them) with it."""
    cwd = Path.cwd().resolve()
    root = default_store_root(cwd)
    if root == cwd or uri != f"sqlite:///{root / DEFAULT_STORE_FILE}":
        return
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=str(root / "mlruns" / experiment))


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
def resume_run(ref: RunRef, stage: str) -> Iterator[mlflow.ActiveRun]:
    """Reopen the training run in the current store; fail clearly if it is not there.

    A later stage failing does not make the training fail: the run keeps the status it had
    (MLflow's own context manager would mark it FAILED) and gets a ``fairtrain.failed.<stage>``
    tag with the error instead, removed again when the stage later succeeds.
    """
    uri = configure_client()
    try:
        status = mlflow.get_run(ref.run_id).info.status
    except MlflowException:
        raise TrackingError(
            f"MLflow run {ref.run_id} is not in the tracking store {uri} (the train stage recorded "
            f"it in {ref.tracking_uri}); set {TRACKING_URI_ENV} to that store or rerun `dvc repro train`"
        ) from None
    client, failure_tag = MlflowClient(uri), f"fairtrain.failed.{stage}"
    run = mlflow.start_run(run_id=ref.run_id)
    try:
        yield run
    except BaseException as error:
        with suppress(Exception):  # the store itself may be what failed
            client.set_tag(ref.run_id, failure_tag, f"{type(error).__name__}: {error}"[:500])
        with suppress(Exception):
            mlflow.end_run(status=status)
        raise
    if failure_tag in client.get_run(ref.run_id).data.tags:
        client.delete_tag(ref.run_id, failure_tag)
    mlflow.end_run(status=status)


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name from free-text parts such as group names."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /")
    return "/".join("".join(ch if ch in allowed else "_" for ch in str(p)) for p in parts)


def log_missing_epochs(client: MlflowClient, run_id: str, history: Iterable[Mapping[str, float]]) -> int:
    """Log from the driver the epochs of ``history`` (rows of ``epoch`` and metric values)
    whose ``val_loss`` the run lacks, and return how many. Rank 0 logs each epoch itself
    while training, but a worker node may lack the tracking server's credentials; this keeps
    the run's curves whole either way, and logs nothing twice."""
    logged = {m.step for m in client.get_metric_history(run_id, "val_loss")}
    missing = [row for row in history if int(row["epoch"]) not in logged]
    if missing:
        log.warning("logging %d epoch(s) the worker did not log to run %s", len(missing), run_id)
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[
                Metric(key=k, value=float(v), timestamp=now, step=int(row["epoch"]))
                for row in missing
                for k, v in row.items()
                if k != "epoch"
            ],
        )
    return len(missing)


# What MLflow answers, from a SQL store or through a server, when the registered model does not
# exist (RESOURCE_DOES_NOT_EXIST) or has no such alias (INVALID_PARAMETER_VALUE).
ABSENT_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` of model ``name`` points at; None when the model or the alias does
    not exist. Any other failure (a server that is down, a refused request) raises: read as
    "no champion", it would promote without comparing or let the non-regression gate pass."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ABSENT_CODES:
            return None
        # MLflow's basic-auth app answers 403 for a model that does not exist yet (its
        # permission check looks the model up first). A search lists what the user may read:
        # not listed means absent, or hidden from this user, who then cannot set aliases on
        # it either, so registering fails later with the server's own refusal.
        if error.get_http_status_code() == 403 and not _model_listed(client, name):
            return None
        raise TrackingError(
            f"cannot read alias {alias!r} of registered model {name!r}: {error.message.splitlines()[0][:300]}"
        ) from error


def _model_listed(client: MlflowClient, name: str) -> bool:
    escaped = name.replace("'", "\\'")
    try:
        return bool(client.search_registered_models(filter_string=f"name = '{escaped}'", max_results=1))
    except MlflowException:
        return True  # cannot tell: keep the refusal
