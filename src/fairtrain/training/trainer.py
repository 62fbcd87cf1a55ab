"""Driver side of distributed training: build the ``TorchTrainer``, run it, pick the best
checkpoint. Runs in the train stage's process; workers run ``worker.train_loop_per_worker``."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from fairtrain.config import TrainConfig
from fairtrain.errors import TrainingError
from fairtrain.tracking import HTTP_DEFAULTS
from fairtrain.training.worker import CHECKPOINT_FILE, train_loop_per_worker

log = logging.getLogger(__name__)

# Where Ray Train keeps its checkpoints. Multi-node clusters need storage every node can
# reach (s3://..., an NFS mount); on one machine a local folder is enough.
STORAGE_ENV = "FAIRTRAIN_RAY_STORAGE"


def configured_storage() -> str | Path | None:
    """``$FAIRTRAIN_RAY_STORAGE`` as Ray's ``storage_path``, or None when it is unset. A URI
    (``s3://bucket/prefix``, anything pyarrow opens) stays as written: ``Path`` would fold its
    ``//`` into ``/``. A local path becomes absolute, so it does not depend on the cwd."""
    value = os.environ.get(STORAGE_ENV, "")
    if not value:
        return None
    return value if "://" in value else Path(value).resolve()


# Ray Train's controller takes one reported epoch from each worker per poll, and a worker's
# next report waits until the last one was taken. Its default poll interval (2 s) is longer
# than an epoch here, so every epoch would stall until the next poll; 0.2 s does not. (A
# missed poll is not a failure: Ray marks a worker dead only after 10 minutes without one.)
HEALTH_CHECK_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
HEALTH_CHECK_INTERVAL_S = "0.2"


@contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment for the block, unless already set (Ray
    Train hands the driver's value of its settings to its controller and workers)."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


@dataclass
class TrainingOutcome:
    checkpoint_path: Path  # a copy of the best epoch's Lightning checkpoint
    history: list[dict]  # one row of reported metrics per epoch
    best: dict  # the metrics of the best epoch
    tags: dict[str, str]  # where rank 0 trained: callbacks.execution_tags


@dataclass
class TrainingData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def scaling_config(params: TrainConfig) -> ScalingConfig:
    """``ScalingConfig`` from params, failing fast when GPUs are asked for but absent."""
    if params.use_gpu:
        available = ray.cluster_resources().get("GPU", 0)
        if available < params.num_workers:
            raise TrainingError(
                f"train.use_gpu is true with train.num_workers={params.num_workers}, but the Ray "
                f"cluster has {available:g} GPU(s); set train.use_gpu: false to train on CPU"
            )
    cpus = ray.cluster_resources().get("CPU", 0)
    if not params.use_gpu and cpus < params.num_workers:
        raise TrainingError(
            f"train.num_workers={params.num_workers} needs {params.num_workers} CPUs but the Ray "
            f"cluster has {cpus:g}; lower train.num_workers or join a larger cluster (RAY_ADDRESS)"
        )
    return ScalingConfig(num_workers=params.num_workers, use_gpu=params.use_gpu)


def train_distributed(
    data: TrainingData,
    params: TrainConfig,
    output_dir: Path,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
    name: str | None = None,
    model_config: dict | None = None,
    callbacks: list | None = None,
) -> TrainingOutcome:
    """Train on ``params.num_workers`` Ray workers; needs a connected Ray session.

    Checkpoints go to ``storage/name`` (``$FAIRTRAIN_RAY_STORAGE`` wins; a temporary folder,
    removed afterwards, when neither is given). Ray restores a run whose folder already holds
    checkpoints, so calling this again with the same ``storage`` and ``name`` after the
    driver died continues from the latest checkpoint instead of starting over.
    """
    config = {
        **params.model_dump(),
        **(model_config or {}),
        "n_features": int(data.x_train.shape[1]),
        # One copy in the object store, shared zero-copy by workers on the same node.
        "data": ray.put({k: np.ascontiguousarray(v) for k, v in vars(data).items()}),
        "run_id": run_id,
        "tracking_uri": tracking_uri,
        "mlflow_http_settings": {name: os.environ[name] for name in HTTP_DEFAULTS if name in os.environ},
    }
    storage = configured_storage() or storage
    scratch = None if storage else tempfile.mkdtemp(prefix="fairtrain-ray-")
    try:  # the scratch folder goes, whatever fails (the trainer's own set-up too)
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=config,
            scaling_config=scaling_config(params),
            torch_config=TorchConfig(backend="nccl" if params.use_gpu else "gloo"),
            run_config=RunConfig(
                name=name or f"fairtrain-{run_id or 'adhoc'}",
                storage_path=str(storage or scratch),
                checkpoint_config=CheckpointConfig(
                    num_to_keep=params.checkpoints_to_keep,
                    checkpoint_score_attribute="val_loss",
                    checkpoint_score_order="min",
                ),
                failure_config=FailureConfig(max_failures=params.max_failures),
                callbacks=callbacks,
            ),
        )
        with _env_default(HEALTH_CHECK_INTERVAL_ENV, HEALTH_CHECK_INTERVAL_S):
            result = trainer.fit()
        best = result.get_best_checkpoint(metric="val_loss", mode="min")
        if best is None:
            raise TrainingError("training finished without reporting a checkpoint")
        output_dir.mkdir(parents=True, exist_ok=True)
        target = output_dir / CHECKPOINT_FILE
        with best.as_directory() as folder:
            shutil.copyfile(Path(folder) / CHECKPOINT_FILE, target)
        returned = result.return_value or {"history": [], "tags": {}}
        best_metrics = next((r for (c, r) in result.best_checkpoints if c.path == best.path), {})
        return TrainingOutcome(
            checkpoint_path=target,
            history=list(returned["history"]),
            best=dict(best_metrics),
            tags=dict(returned["tags"]),
        )
    except TrainingError:
        raise
    except Exception as error:  # Ray wraps worker errors in TrainingFailedError
        raise TrainingError(f"distributed training failed: {error}") from error
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
