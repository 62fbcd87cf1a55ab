"""The train stage: one MLflow run, Ray Train workers, an exported model."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.data.preprocessing import Preprocessor, target_vector
from fairtrain.errors import TrainingError
from fairtrain.io import json_safe, read_json, write_json
from fairtrain.models.export import save_model, state_dict_from_lightning_checkpoint
from fairtrain.training.ray_runtime import ray_session
from fairtrain.training.trainer import CHECKPOINT_FILE, TrainingData, train_distributed

log = logging.getLogger(__name__)
HISTORY_KEYS = ("train_loss", "val_loss", "val_auc", "samples_per_second")


def features_and_target(
    frame: pd.DataFrame, preprocessor: Preprocessor, params: Params
) -> tuple[np.ndarray, np.ndarray]:
    return preprocessor.transform(frame), target_vector(frame, params.dataset)


def _flat_params(params: Params) -> dict[str, object]:
    """The knobs that shape the model, as MLflow params (immutable per run, so logged once)."""
    flat: dict[str, object] = {"dataset.path": params.dataset.path}
    for section in ("prepare", "augment", "train"):
        for key, value in getattr(params, section).model_dump(mode="json").items():
            flat[f"{section}.{key}"] = value
    return flat


def log_missing_epochs(run_id: str, history: list[dict]) -> None:
    """Log from the driver any epoch the rank-0 worker could not log itself (a worker on a
    remote node may lack the tracking server's credentials), so the run's curves are whole."""
    client = MlflowClient()
    logged = {m.step for m in client.get_metric_history(run_id, "val_loss")}
    missing = [row for row in history if int(row["epoch"]) not in logged]
    if missing:
        log.warning("logging %d epoch(s) the worker did not log", len(missing))
        client.log_batch(
            run_id,
            metrics=[
                Metric(key=k, value=float(v), timestamp=int(time.time() * 1000), step=int(row["epoch"]))
                for row in missing
                for k, v in row.items()
                if k != "epoch"
            ],
        )


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
    preprocessor = Preprocessor.from_dict(read_json(preprocessor_path))
    train, val = pd.read_parquet(train_path), pd.read_parquet(val_path)
    x_train, y_train = features_and_target(train, preprocessor, params)
    x_val, y_val = features_and_target(val, preprocessor, params)

    model_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking.resolve_tracking_uri()
    experiment_id = tracking.configure(params.tracking.experiment, uri)
    started = time.perf_counter()
    # The run is closed FAILED by the context manager if anything below raises.
    with mlflow.start_run(run_name=f"train-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        run_id = run.info.run_id
        log.info("MLflow run %s in %s", run_id, uri)
        mlflow.log_params(_flat_params(params))
        mlflow.set_tags({"fairtrain.stage": "train", "fairtrain.num_workers": params.train.num_workers})
        for name, frame, path in (("train", train, train_path), ("val", val, val_path)):
            with warnings.catch_warnings():
                # A local path matches two equivalent MLflow source types; it warns and picks one.
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(
                    frame, source=str(path.resolve()), name=name, targets=params.dataset.label
                )
            mlflow.log_input(dataset, context="training" if name == "train" else "validation")

        with ray_session(), tempfile.TemporaryDirectory(prefix=".staging-", dir=model_dir) as scratch:
            outcome = train_distributed(
                TrainingData(x_train, y_train, x_val, y_val),
                params.train,
                Path(scratch),
                run_id=run_id,
                tracking_uri=uri,
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
                {"epoch": int(r["epoch"]) + 1, **{k: float(r[k]) for k in HISTORY_KEYS if k in r}}
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
            log_missing_epochs(run_id, outcome.history)

            # Local outputs last, each replaced atomically, the run reference after everything
            # else: a run reference on disk always sits next to the model it describes.
            architecture = {
                "n_features": int(x_train.shape[1]),
                "hidden_sizes": params.train.hidden_sizes,
                "dropout": params.train.dropout,
                "feature_names": preprocessor.feature_names,
            }
            save_model(model_dir / "model", state, architecture)
            os.replace(outcome.checkpoint_path, model_dir / CHECKPOINT_FILE)
        write_json(metrics_path, summary)
        write_json(history_path, history)
        ref = tracking.RunRef(run_id=run_id, experiment_id=experiment_id, tracking_uri=uri)
        ref.save(run_ref_path)
    log.info(
        "best epoch %d: val_loss %.4f, val_auc %s",
        summary["best_epoch"],
        summary["best_val_loss"],
        summary["best_val_auc"],
    )
    return ref
