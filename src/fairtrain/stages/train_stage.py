"""The train stage: one MLflow run, Ray Train workers, an exported model.

The stage survives being killed: Ray Train checkpoints every epoch into a folder named after
a hash of the training params and the input files (the training key) and the MLflow run id;
a small record named after the key holds the run id. A rerun with the same params and data
finds the record, reopens the same run and continues from the latest checkpoint in that
run's folder; anything else starts a new run. The folder is removed once the model has been
exported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.errors import TrainingError
from fairtrain.io import json_safe, write_json
from fairtrain.models.export import save_model, state_dict_from_lightning_checkpoint
from fairtrain.stages.training_inputs import features_and_target, model_options, read_training_inputs
from fairtrain.training.driver_guard import DRIVER_TAG, driver_alive, driver_tag, exclusive_training
from fairtrain.training.ray_runtime import ray_session
from fairtrain.training.trainer import TrainingData, configured_storage, train_distributed
from fairtrain.training.worker import CHECKPOINT_FILE

log = logging.getLogger(__name__)
STORAGE_DIR = ".ray-runs"  # under the model directory, unless $FAIRTRAIN_RAY_STORAGE is set
SYSTEM_METRICS_INTERVAL_S = 5


# The code a checkpoint's meaning depends on (the model, the training loop and its callbacks),
# relative to the fairtrain package; dvc.yaml reruns the train stage when it changes.
TRAINING_CODE = ("models", "training", "lightning.py")


def training_code_digest(package_root: Path | None = None) -> str:
    """A hash of the training code's source files, so that a checkpoint left by a killed run
    is not resumed by changed code (a fixed bug, a changed architecture that would not load)."""
    root = package_root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for entry in TRAINING_CODE:
        files = sorted((root / entry).rglob("*.py")) if (root / entry).is_dir() else [root / entry]
        for path in files:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def training_key(params: Params, *inputs: Path, code: str | None = None) -> str:
    """A hash of everything that determines the training: its params, its input files and the
    training code (``code``: ``training_code_digest()`` unless given)."""
    digest = hashlib.sha256()
    shaping = {
        "train": params.train.model_dump(mode="json"),
        "label": params.dataset.label,
        "positive_class": params.dataset.positive_class,
        "experiment": params.tracking.experiment,
        "code": code if code is not None else training_code_digest(),
    }
    digest.update(json.dumps(shaping, sort_keys=True).encode())
    for path in inputs:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def remove_run_folder(storage: str | Path, name: str) -> None:
    """Delete Ray Train's folder ``storage/name`` (a local path or a pyarrow-supported URI)."""
    if isinstance(storage, Path):
        shutil.rmtree(storage / name, ignore_errors=True)
        return
    from pyarrow import fs

    try:
        filesystem, root = fs.FileSystem.from_uri(storage)
        if filesystem.get_file_info(f"{root}/{name}").type != fs.FileType.NotFound:
            filesystem.delete_dir(f"{root}/{name}")
    except Exception as error:  # storage we cannot reach now: Ray fails clearly later if needed
        log.warning("could not remove old checkpoints at %s/%s: %s", storage, name, error)


def checkpoint_folder(key: str, run_id: str) -> str:
    """Ray Train's folder for the training of ``key`` in MLflow run ``run_id``. The run id
    keeps two identical trainings apart when several workspaces share one storage location
    ($FAIRTRAIN_RAY_STORAGE); a resumed run has the same id, so it finds its checkpoints."""
    return f"fairtrain-train-{key}-{run_id}"


def recorded_run_id(record: Path) -> str | None:
    """The MLflow run id in a training's resume record, if there is a readable one."""
    if not record.exists():
        return None
    try:
        return str(json.loads(record.read_text())["run_id"])
    except (OSError, ValueError, KeyError) as error:
        log.warning("ignoring %s: %s", record, error)
        return None


def resumable_run_id(run_id: str | None, experiment_id: str) -> str | None:
    """``run_id`` (from the key's resume record) when that run can be continued: it exists
    in the current store, in the stage's experiment, is not deleted and did not finish. A run
    deleted in the MLflow UI (or one of a deleted and recreated experiment) cannot be
    reopened, so the training starts a new run instead of failing on every rerun."""
    if run_id is None:
        return None
    try:
        info = MlflowClient().get_run(run_id).info
    except MlflowException as error:
        log.warning("ignoring the recorded run %s: %s", run_id, error)
        return None
    if info.lifecycle_stage != "active" or info.experiment_id != experiment_id:
        where = "deleted" if info.lifecycle_stage != "active" else f"in experiment {info.experiment_id}"
        log.warning("not resuming the recorded run %s: it is %s; starting a new run", run_id, where)
        return None
    if info.status == "FINISHED":
        return None
    log.info("resuming MLflow run %s (left %s) and its checkpoints", run_id, info.status)
    return run_id


def close_runs_of_dead_drivers(experiment_id: str, condition: str, keep: str | None = None) -> list[str]:
    """Mark KILLED the RUNNING runs matching ``condition`` (an MLflow filter) whose driver is
    gone: a killed driver (SIGKILL, a lost machine) could not close them. A run whose driver
    is still alive (the same training in another workspace, e.g. a parallel ``dvc exp run``
    queue worker) is left alone, as is one driven from another host, which this one cannot
    check. Returns the ids of the runs closed."""
    client = MlflowClient()
    abandoned = client.search_runs(
        [experiment_id], filter_string=f"{condition} and attributes.status = 'RUNNING'"
    )
    closed = []
    for run in abandoned:
        # A child run (a search's trial) has no driver tag of its own: its parent's decides.
        if run.info.run_id == keep or "mlflow.parentRunId" in run.data.tags:
            continue
        if driver_alive(run.data.tags.get(DRIVER_TAG)):
            log.info(
                "leaving run %s RUNNING: its driver (%s) is still running",
                run.info.run_id,
                run.data.tags.get(DRIVER_TAG),
            )
        else:
            log.warning("closing run %s, left RUNNING by a killed driver, as KILLED", run.info.run_id)
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    return closed


def close_abandoned_runs(experiment_id: str, key: str, keep: str | None) -> None:
    """The runs of this training (same key) that a killed driver left RUNNING before it could
    record them for resuming (``close_runs_of_dead_drivers``)."""
    close_runs_of_dead_drivers(experiment_id, f"tags.`fairtrain.training_key` = '{key}'", keep)


@contextmanager
def training_run(run_id: str | None, run_name: str) -> Iterator[mlflow.ActiveRun]:
    """The training's MLflow run (a new one, or ``run_id`` reopened), closed FINISHED on
    success, KILLED when interrupted (Ctrl-C, SIGTERM from `dvc repro`) and FAILED on any
    error, so it is never left RUNNING by anything short of SIGKILL (which a rerun repairs)."""
    mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    mlflow.set_system_metrics_samples_before_logging(1)
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, log_system_metrics=True)
    try:
        yield run
    except BaseException as error:
        status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
        with suppress(Exception):  # the store itself may be what failed
            mlflow.end_run(RunStatus.to_string(status))
        raise
    mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


def _flat_params(params: Params) -> dict[str, object]:
    """The knobs that shape the model, as MLflow params (immutable per run, so logged once)."""
    flat: dict[str, object] = {"dataset.path": params.dataset.path}
    for section in ("prepare", "augment", "train"):
        for key, value in getattr(params, section).model_dump(mode="json").items():
            flat[f"{section}.{key}"] = value
    return flat


STAGE_TAG = "fairtrain.stage"


def log_run_metadata(params: Params, inputs: dict[str, tuple[pd.DataFrame, Path]]) -> None:
    """The active run's train.* (and upstream) params, its worker count, its dataset inputs
    (``inputs``: ``"train"``/``"val"`` -> frame and path) and, last, its stage tag: a run with
    the tag has all of them. Logging them again with the same values is accepted by MLflow."""
    mlflow.log_params(_flat_params(params))
    mlflow.set_tag("fairtrain.num_workers", params.train.num_workers)
    for name, (frame, path) in inputs.items():
        with warnings.catch_warnings():
            # A local path matches two equivalent MLflow source types; it warns and picks one.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame, source=str(Path(path).resolve()), name=name, targets=params.dataset.label
            )
        mlflow.log_input(dataset, context="training" if name == "train" else "validation")
    mlflow.set_tag(STAGE_TAG, "train")


def train_stage(
    params: Params,
    train_path: Path,
    val_path: Path,
    preprocessor_path: Path,
    model_dir: Path,
    run_ref_path: Path,
    metrics_path: Path,
    history_path: Path,
) -> tracking.RunRef:
    preprocessor, train, val = read_training_inputs(train_path, val_path, preprocessor_path)
    x_train, y_train = features_and_target(train, preprocessor, params)
    x_val, y_val = features_and_target(val, preprocessor, params)

    model_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking.resolve_tracking_uri()
    experiment_id = tracking.configure(params.tracking.experiment, uri)
    started = time.perf_counter()
    key = training_key(params, train_path, val_path, preprocessor_path)
    # Checkpoints go to $FAIRTRAIN_RAY_STORAGE (a path or a URI such as s3://...) or next to
    # the model; the resume record always stays local, next to the model.
    storage = configured_storage() or (model_dir / STORAGE_DIR).resolve()
    record = (model_dir / STORAGE_DIR).resolve() / f"fairtrain-train-{key}.json"
    # One training per key at a time in this model directory (see training/driver_guard.py).
    with exclusive_training(record.with_suffix(".lock")):
        previous_id = recorded_run_id(record)
        resume_id = resumable_run_id(previous_id, experiment_id)
        close_abandoned_runs(experiment_id, key, keep=resume_id)
        if resume_id is None and previous_id:
            # Checkpoints of a recorded run that finished or is gone.
            remove_run_folder(storage, checkpoint_folder(key, previous_id))
        options = model_options(params, preprocessor, y_train)

        with training_run(resume_id, f"train-{time.strftime('%Y%m%d-%H%M%S')}") as run:
            run_id = run.info.run_id
            name = checkpoint_folder(key, run_id)
            mlflow.set_tags({"fairtrain.training_key": key, DRIVER_TAG: driver_tag()})
            log.info("MLflow run %s in %s", run_id, uri)
            if resume_id:
                client = MlflowClient()
                tags = client.get_run(run_id).data.tags
                restarts = int(tags.get("fairtrain.driver_restarts", "0")) + 1
                mlflow.set_tag("fairtrain.driver_restarts", restarts)
                if tags.get(STAGE_TAG) != "train":  # recorded before its metadata (older versions)
                    log_run_metadata(params, {"train": (train, train_path), "val": (val, val_path)})
            else:
                log_run_metadata(params, {"train": (train, train_path), "val": (val, val_path)})
                # Only a run with all its metadata is recorded for resuming: a resumed run skips
                # this branch, so a failure above must leave no record (the rerun starts anew).
                write_json(record, {"run_id": run_id, "experiment_id": experiment_id, "key": key})

            with ray_session(), tempfile.TemporaryDirectory(prefix=".staging-", dir=model_dir) as scratch:
                outcome = train_distributed(
                    TrainingData(x_train, y_train, x_val, y_val),
                    params.train,
                    Path(scratch),
                    run_id=run_id,
                    tracking_uri=uri,
                    storage=storage,
                    name=name,
                    model_config=options,
                )
                if not outcome.history or "val_loss" not in outcome.best:
                    raise TrainingError("training finished without a validation loss for any epoch")
                state = state_dict_from_lightning_checkpoint(outcome.checkpoint_path)
                summary = {
                    "epochs_run": len(outcome.history),
                    "best_epoch": int(outcome.best.get("epoch", outcome.history[-1]["epoch"])) + 1,
                    "best_val_loss": float(outcome.best["val_loss"]),
                    "best_val_auc": outcome.best.get("val_auc"),
                    "train_rows": len(train),
                    "num_workers": params.train.num_workers,
                    "seconds": round(time.perf_counter() - started, 1),
                    "hyperparameters": params.train.model_dump(mode="json"),
                }
                history = [
                    {
                        "epoch": int(r["epoch"]) + 1,
                        **{k: float(r[k]) for k in tracking.EPOCH_METRICS if k in r},
                    }
                    for r in outcome.history
                ]
                mlflow.log_metrics(
                    {
                        "best_val_loss": summary["best_val_loss"],
                        "best_epoch": summary["best_epoch"],
                        "train_seconds": summary["seconds"],
                        **(
                            {"best_val_auc": summary["best_val_auc"]}
                            if summary["best_val_auc"] is not None
                            else {}
                        ),
                    }
                )
                mlflow.log_dict(json_safe(summary), "training/train.json")
                tracking.log_missing_epochs(MlflowClient(), run_id, outcome.history)
                # Set by the worker too when it reaches the server; the same values either way.
                mlflow.set_tags(outcome.tags)

                # Local outputs last, each replaced atomically. The old run reference goes
                # before the new model comes and the new one after everything else, so a run
                # reference on disk always describes the model beside it; a kill in between
                # leaves none, and DVC reruns the stage.
                run_ref_path.unlink(missing_ok=True)
                architecture = {
                    "n_features": int(x_train.shape[1]),
                    "hidden_sizes": params.train.hidden_sizes,
                    "dropout": params.train.dropout,
                    "batch_norm": params.train.batch_norm,
                    "embeddings": options["embedding_blocks"],
                    "numeric_embedding": options["numeric_embedding_spec"],
                    "feature_names": preprocessor.feature_names,
                }
                save_model(model_dir / "model", state, architecture)
                os.replace(outcome.checkpoint_path, model_dir / CHECKPOINT_FILE)
            # The model is out: its checkpoints and resume record are no longer needed.
            remove_run_folder(storage, name)
            record.unlink(missing_ok=True)
            write_json(metrics_path, summary)
            write_json(history_path, history)
            ref = tracking.RunRef(run_id=run_id, experiment_id=experiment_id, tracking_uri=uri)
            ref.save(run_ref_path)
    auc = summary["best_val_auc"]
    log.info(
        "best epoch %d: val_loss %.4f, val_auc %s",
        summary["best_epoch"],
        summary["best_val_loss"],
        # None when the validation split held one class (the AUC is undefined there).
        "n/a" if auc is None else f"{auc:.4f}",
    )
    return ref
