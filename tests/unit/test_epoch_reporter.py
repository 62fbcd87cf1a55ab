"""Rank 0's per-epoch MLflow logging when the tracking server cannot be reached from the
worker: a real Lightning training with the reporter, against a loopback port nothing listens on."""

from __future__ import annotations

import logging
import os

import torch
from torch.utils.data import DataLoader, TensorDataset

from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.tracking import HTTP_DEFAULTS
from fairtrain.training.callbacks import EpochReporter
from tests.helpers import quiet_trainer, undo_mlflow_state_with
from tests.integration.servers import free_port

# What the driver would pass: no retries, so the refused connection fails at once.
DRIVER_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


def test_a_worker_that_cannot_reach_the_server_warns_once_trains_on_and_uses_the_drivers_retries(
    monkeypatch, caplog
):
    undo_mlflow_state_with(monkeypatch)  # the reporter sets the retry variables in this process
    for name in HTTP_DEFAULTS:  # a worker node whose environment has none of them
        monkeypatch.delenv(name, raising=False)
    reporter = EpochReporter("0" * 32, f"http://127.0.0.1:{free_port()}", 64, DRIVER_SETTINGS)
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 2, (64,)).float()
    module = TabularClassifier(5, [8], 0.0, 1e-3, 0.0)
    trainer = quiet_trainer(3, callbacks=[reporter], enable_checkpointing=False)
    with caplog.at_level(logging.WARNING, logger="fairtrain"):
        trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16))

    assert [row["epoch"] for row in reporter.history] == [0, 1, 2], "the training went on"
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("fairtrain")]
    assert len(warnings) == 1, warnings  # the tags' failure; no attempt per epoch after it
    assert warnings[0].startswith("stopped logging to MLflow from the worker")
    assert {name: os.environ.get(name) for name in DRIVER_SETTINGS} == DRIVER_SETTINGS
