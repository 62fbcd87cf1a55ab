"""Lightning callbacks that run inside each Ray worker."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

log = logging.getLogger("fairtrain.training")


class EpochReporter(pl.Callback):
    """On global rank 0 only: print one progress line per epoch and log the epoch's metrics
    into the driver's MLflow run. Other ranks do nothing, so a run never gets duplicate or
    stray entries, whatever the worker count."""

    def __init__(self, run_id: str | None, tracking_uri: str | None, samples_per_epoch: int) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.samples_per_epoch = samples_per_epoch
        self._client: MlflowClient | None = None
        self._started = 0.0
        self._logging = True
        self.history: list[dict] = []  # rank 0's per-epoch metrics, returned to the driver

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["samples_per_second"] = self.samples_per_epoch / elapsed
        epoch = trainer.current_epoch
        shown = " ".join(
            f"{k}={metrics[k]:.4f}" for k in ("train_loss", "val_loss", "val_auc") if k in metrics
        )
        # Through logging, not print: Ray Train forwards worker log records to the driver.
        log.info(
            "epoch %d/%d %s (%s samples/s)",
            epoch + 1,
            trainer.max_epochs,
            shown,
            f"{metrics['samples_per_second']:,.0f}",
        )
        self.history.append({"epoch": epoch, **metrics})
        if self.run_id and self._logging:
            try:
                if self._client is None:
                    self._client = MlflowClient(self.tracking_uri)
                now = int(time.time() * 1000)
                self._client.log_batch(
                    self.run_id,
                    metrics=[Metric(key=k, value=v, timestamp=now, step=epoch) for k, v in metrics.items()],
                )
            except Exception as error:  # e.g. a worker node without the server's credentials
                # Live curves are a convenience: losing them must not lose the training. The
                # driver logs whatever epochs are missing from the history it gets back.
                log.warning("stopped logging epochs to MLflow from the worker: %s", error)
                self._logging = False
