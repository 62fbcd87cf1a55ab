"""The loop each Ray Train worker runs: one Lightning ``Trainer`` per worker.

Ray wires the workers into one process group (gloo on CPU, NCCL on GPU), over which
``strategy.AllReduceStrategy`` averages the gradients after every backward. Each worker
reads its own disjoint shard of the rows (``sharding.ShardBatches``), so N workers each see
1/N of an epoch, ``steps_per_execution`` minibatches per Lightning step. Every epoch ends
with a full Lightning checkpoint (weights, optimiser, scheduler, early-stopping state, loop
position, metric history) reported to Ray; a worker group that Ray restarts after a failure,
or a rerun of the stage, resumes from the latest.
"""

from __future__ import annotations

import importlib
import logging
import math
import warnings
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import ray
import ray.train
import torch
from ray.train.lightning import (
    RayLightningEnvironment,
    RayTrainReportCallback,
    prepare_trainer,
)
from torch.utils.data import DataLoader, TensorDataset

from fairtrain.lightning import EarlyStopping, pl
from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.training.callbacks import EpochCheckpoint, EpochReporter, RngState, TestProbe
from fairtrain.training.sharding import ShardBatches
from fairtrain.training.strategy import AllReduceStrategy

CHECKPOINT_FILE = RayTrainReportCallback.CHECKPOINT_NAME

# Rows per validation batch (at least batch_size). Validation has no backward pass and each
# Lightning validation step has a fixed cost, so a few large batches are faster than many
# small ones (2% of the epoch on Adult; see benchmarks/train_throughput.py); bounded so that
# wide data sets still validate in a few MB.
VALIDATION_BATCH_ROWS = 8192


def _tensors(features: np.ndarray, target: np.ndarray) -> TensorDataset:
    # Arrays from Ray's object store are read-only shared memory; torch warns about that but
    # never writes to them, and copying would give every worker its own full copy.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return TensorDataset(torch.from_numpy(features), torch.from_numpy(target))


def loader(dataset: TensorDataset, batches: ShardBatches) -> DataLoader:
    # batch_size=None: the sampler yields whole batches of indices and the dataset gathers
    # them in one indexing call (no per-row __getitem__, no collate). Its own generator: a
    # DataLoader draws a seed each epoch, which would otherwise come from torch's global
    # generator and shift the dropout masks (callbacks.RngState keeps those for resumption).
    return DataLoader(dataset, sampler=batches, batch_size=None, generator=torch.Generator().manual_seed(0))


def build_module(config: dict[str, Any], steps_per_epoch: int = 1) -> TabularClassifier:
    return TabularClassifier(
        n_features=config["n_features"],
        hidden_sizes=config["hidden_sizes"],
        dropout=config["dropout"],
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
        batch_norm=config.get("batch_norm", False),
        embeddings=config.get("embedding_blocks") or None,
        numeric_embedding=config.get("numeric_embedding_spec") or None,
        optimizer=config.get("optimizer", "adamw"),
        momentum=config.get("momentum", 0.9),
        lr_schedule=config.get("lr_schedule", "none"),
        max_epochs=config["max_epochs"],
        steps_per_epoch=steps_per_epoch,
        pos_weight=config.get("pos_weight"),
        batch_size=config.get("batch_size"),
        gradient_clip_val=config.get("gradient_clip_val") or 0.0,
    )


def quiet_ray_train_reports() -> None:
    """Ray Train logs two INFO lines per worker and epoch ("Checkpoint successfully created
    at ...", "Reporting training result N: TrainingReport(...)"), which bury the one progress
    line per epoch; in the worker their loggers go to WARNING, so warnings and errors still
    show. The loggers live in Ray's private modules: one that moved is left as it is."""
    for module in (
        "ray.train.v2._internal.execution.context",
        "ray.train.v2._internal.execution.storage",
        "ray.train._internal.storage",
    ):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        # Each has a module-level `logger` (context.py's is named after its file, not module).
        logger = getattr(imported, "logger", None)
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.WARNING)


class _DropLightningTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_lightning_notices() -> None:
    """Two notices per worker that users cannot act on: Lightning's tip to install its
    hosted logger (every Trainer prints it; fairtrain logs to MLflow), and the FutureWarning
    that Lightning's own code raises under recent torch (`isinstance(treespec, LeafSpec)`).
    Lightning's other start-up lines (GPU and TPU availability) stay."""
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    logger = logging.getLogger(f"{pl.__name__}.utilities.rank_zero")
    if not any(isinstance(existing, _DropLightningTip) for existing in logger.filters):
        logger.addFilter(_DropLightningTip())


class WorkerResult(TypedDict):
    history: list[dict]  # per-epoch metrics, including epochs run before a restart
    tags: dict[str, str]  # callbacks.execution_tags of this worker's training


def train_loop_per_worker(config: dict[str, Any]) -> WorkerResult:
    """Entry point Ray calls on every worker with the same ``config``.

    Returns the per-epoch metrics and the execution tags (rank 0's reach the driver); the
    history includes epochs run before a restart, as it travels inside the checkpoint.
    """
    quiet_ray_train_reports()
    quiet_lightning_notices()
    pl.seed_everything(config["seed"], workers=True, verbose=False)
    context = ray.train.get_context()
    world, rank = context.get_world_size(), context.get_world_rank()
    data = ray.get(config["data"])
    train_set = _tensors(data["x_train"], data["y_train"])
    val_set = _tensors(data["x_val"], data["y_val"])
    batch_size = config["batch_size"]
    # Each loader batch holds steps_per_execution minibatches; the module steps through them.
    train_batches = ShardBatches(
        len(train_set),
        batch_size * config.get("steps_per_execution", 1),
        world,
        rank,
        config["seed"],
        shuffle=True,
    )
    val_batches = ShardBatches(
        len(val_set), max(batch_size, VALIDATION_BATCH_ROWS), world, rank, config["seed"], shuffle=False
    )

    reporter = EpochReporter(
        config.get("run_id"), config.get("tracking_uri"), len(train_set), config.get("mlflow_http_settings")
    )
    callbacks: list[pl.Callback] = [
        EarlyStopping(monitor="val_loss", mode="min", patience=config["early_stopping_patience"]),
        reporter,
        RngState(),
        EpochCheckpoint(),  # Lightning runs it after the epoch's other end hooks, see its class
    ]
    probe = TestProbe.from_environment(train_batches)
    if probe:
        callbacks.append(probe)  # last: runs after the epoch's checkpoint was reported
    trainer = pl.Trainer(
        max_epochs=config["max_epochs"],
        accelerator="gpu" if config["use_gpu"] else "cpu",
        devices="auto",
        precision=config.get("precision", "32-true"),
        strategy=AllReduceStrategy(),
        plugins=[RayLightningEnvironment()],
        callbacks=callbacks,
        use_distributed_sampler=False,  # ShardBatches already shards
        logger=False,  # rank 0's EpochReporter logs to the one MLflow run
        enable_checkpointing=True,  # EpochCheckpoint is the only checkpoint callback: no ModelCheckpoint
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=config["deterministic"],
    )
    trainer = prepare_trainer(trainer)
    module = build_module(config, steps_per_epoch=math.ceil(len(train_batches.indices()) / batch_size))
    fit = {
        "train_dataloaders": loader(train_set, train_batches),
        "val_dataloaders": loader(val_set, val_batches),
    }
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        trainer.fit(module, **fit)
    else:
        with checkpoint.as_directory() as folder:
            trainer.fit(module, ckpt_path=str(Path(folder) / CHECKPOINT_FILE), **fit)
    return {"history": reporter.history, "tags": reporter.tags}
