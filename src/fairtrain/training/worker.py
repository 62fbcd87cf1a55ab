"""The loop each Ray Train worker runs: one ``pytorch_lightning.Trainer`` per worker.

Ray wires the workers into one DDP process group (gloo on CPU, NCCL on GPU); Lightning's
``DistributedSampler`` gives each worker its own shard of the batches, so N workers each see
1/N of an epoch.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytorch_lightning as pl
import ray
import ray.train
import torch
from pytorch_lightning.callbacks import EarlyStopping
from ray.train.lightning import (
    RayDDPStrategy,
    RayLightningEnvironment,
    RayTrainReportCallback,
    prepare_trainer,
)
from torch.utils.data import DataLoader, TensorDataset

from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.training.callbacks import EpochReporter


def _tensors(features: np.ndarray, target: np.ndarray) -> TensorDataset:
    # Arrays from Ray's object store are read-only shared memory; torch warns about that but
    # never writes to them, and copying would give every worker its own full copy.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return TensorDataset(torch.from_numpy(features), torch.from_numpy(target))


def build_module(config: dict[str, Any]) -> TabularClassifier:
    return TabularClassifier(
        n_features=config["n_features"],
        hidden_sizes=config["hidden_sizes"],
        dropout=config["dropout"],
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
    )


def train_loop_per_worker(config: dict[str, Any]) -> list[dict]:
    """Entry point Ray calls on every worker with the same ``config``.

    Returns the per-epoch metrics; Ray hands rank 0's return value to the driver.
    """
    pl.seed_everything(config["seed"], workers=True, verbose=False)
    data = ray.get(config["data"])
    train_set = _tensors(data["x_train"], data["y_train"])
    val_set = _tensors(data["x_val"], data["y_val"])
    train_loader = DataLoader(train_set, batch_size=config["batch_size"], shuffle=True)
    val_loader = DataLoader(val_set, batch_size=max(config["batch_size"], 1024))

    reporter = EpochReporter(config.get("run_id"), config.get("tracking_uri"), len(train_set))
    trainer = pl.Trainer(
        max_epochs=config["max_epochs"],
        accelerator="gpu" if config["use_gpu"] else "cpu",
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        callbacks=[
            EarlyStopping(monitor="val_loss", mode="min", patience=config["early_stopping_patience"]),
            reporter,
            RayTrainReportCallback(),
        ],
        logger=False,  # rank 0's EpochReporter logs to the one MLflow run
        enable_checkpointing=False,  # RayTrainReportCallback owns checkpoints
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer = prepare_trainer(trainer)
    trainer.fit(build_module(config), train_dataloaders=train_loader, val_dataloaders=val_loader)
    return reporter.history
