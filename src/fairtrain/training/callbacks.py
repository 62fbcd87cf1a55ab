"""Lightning callbacks that run inside each Ray worker."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import torch
from ray.train.lightning import RayTrainReportCallback
from torch import distributed

from fairtrain.lightning import pl
from fairtrain.training.tags import (
    BACKEND_TAG,
    DETERMINISTIC_TAG,
    DEVICE_TAG,
    LIGHTNING_TAG,
    PRECISION_TAG,
    WORLD_SIZE_TAG,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("fairtrain.training")


def execution_tags(trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, str]:
    """The device (with the GPU's name), the process group's backend, the precision, the
    worker count, whether deterministic algorithms are on and the Lightning package, in a
    running training (tag names: fairtrain.training.tags)."""
    device = module.device
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    grouped = distributed.is_available() and distributed.is_initialized()
    return {
        DEVICE_TAG: f"{device}{gpu}",
        BACKEND_TAG: str(distributed.get_backend()) if grouped else "none",
        PRECISION_TAG: str(trainer.precision),
        WORLD_SIZE_TAG: str(trainer.world_size),
        DETERMINISTIC_TAG: str(torch.are_deterministic_algorithms_enabled()).lower(),
        LIGHTNING_TAG: pl.__name__,
    }


# Test hook (off unless set): a folder where each worker writes what it did. An epoch number
# in its file PAUSE_FILE makes a first attempt pause after that epoch's checkpoint, so a test
# can kill a process at a known point.
PROBE_DIR_ENV = "FAIRTRAIN_TEST_PROBE_DIR"
PAUSE_FILE = "pause_after_epoch"


class EpochReporter(pl.Callback):
    """On global rank 0 only: print one progress line per epoch and log the epoch's metrics
    into the driver's MLflow run. Other ranks do nothing, so a run never gets duplicate or
    stray entries, whatever the worker count.

    Its history is part of the checkpoint, so after a restart the driver still gets every
    epoch, and epochs already in MLflow (logged before the failure) are not logged twice.
    Its history and execution tags go back to the driver, which logs whatever this worker
    could not (a worker node may lack the tracking server's credentials).
    """

    def __init__(
        self,
        run_id: str | None,
        tracking_uri: str | None,
        samples_per_epoch: int,
        http_settings: dict[str, str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        # The driver's bounded MLflow HTTP retries (tracking.HTTP_DEFAULTS): a worker on another
        # node does not inherit the driver's environment, and MLflow's own defaults would keep
        # rank 0, and the ranks waiting for it, retrying for minutes on a server it cannot reach.
        self.http_settings = dict(http_settings or {})
        self.samples_per_epoch = samples_per_epoch
        self._client: MlflowClient | None = None
        self._started = 0.0
        self._logging = True
        self._logged_steps: set[int] = set()
        self.history: list[dict] = []  # rank 0's per-epoch metrics, returned to the driver
        self.tags: dict[str, str] = {}  # where rank 0 trains (execution_tags), returned too

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def _mlflow(self) -> MlflowClient:
        # Imported here, not at the top: only rank 0 with a run logs, and importing mlflow
        # costs each worker process about 0.6-0.9 s of CPU during Ray's start-up.
        if self._client is None:
            from mlflow.tracking import MlflowClient

            for name, value in self.http_settings.items():  # the node's own settings win
                os.environ.setdefault(name, value)
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        self._report_execution(trainer, pl_module)
        if trainer.current_epoch:
            log.info("resumed from the checkpoint of epoch %d", trainer.current_epoch)
            if self.run_id:
                try:
                    history = self._mlflow().get_metric_history(self.run_id, "val_loss")
                    self._logged_steps = {m.step for m in history}
                except Exception as error:
                    log.warning("cannot read the run's logged epochs: %s", error)

    def _report_execution(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tags = self.tags = execution_tags(trainer, pl_module)
        log.info(
            "training on %s worker(s), rank 0 on %s, process group %s, precision %s",
            tags[WORLD_SIZE_TAG],
            tags[DEVICE_TAG],
            tags[BACKEND_TAG],
            tags[PRECISION_TAG],
        )
        if self.run_id and self._logging:
            try:
                from mlflow.entities import RunTag

                self._mlflow().log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            except Exception as error:  # as for the epochs' metrics below: never lose the training
                # One warning, and no retries per epoch: the driver sets these tags and logs
                # the epochs from what rank 0 returns.
                log.warning("stopped logging to MLflow from the worker (the run's tags): %s", error)
                self._logging = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["samples_per_second"] = self.samples_per_epoch / elapsed
        # RayTrainReportCallback (after this one) reports callback_metrics with the epoch's
        # checkpoint; with the throughput there, Tune's trials receive it like the losses.
        trainer.callback_metrics["samples_per_second"] = torch.tensor(metrics["samples_per_second"])
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
        self.history = [row for row in self.history if row["epoch"] != epoch]
        self.history.append({"epoch": epoch, **metrics})
        if self.run_id and self._logging and epoch not in self._logged_steps:
            try:
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                self._mlflow().log_batch(
                    self.run_id,
                    metrics=[Metric(key=k, value=v, timestamp=now, step=epoch) for k, v in metrics.items()],
                )
            except Exception as error:  # e.g. a worker node without the server's credentials
                # Live curves are a convenience: losing them must not lose the training. The
                # driver logs whatever epochs are missing from the history it gets back.
                log.warning("stopped logging epochs to MLflow from the worker: %s", error)
                self._logging = False


class AfterEpochEndHooks(pl.callbacks.Checkpoint):
    """Base for the callback that saves the epoch's checkpoint: being a Lightning ``Checkpoint``
    makes Lightning run its ``on_train_epoch_end`` after the module's (where the cosine and
    plateau schedules step) and after ``EarlyStopping``'s check, as it does for its own
    ``ModelCheckpoint``. A plain callback's hook runs before both, so its checkpoint held the
    schedule and the early-stopping state of the epoch before, and a run resumed from it
    lagged one schedule step behind the uninterrupted run and never saw that epoch's loss.

    It also keeps early stopping's decision: Lightning does not checkpoint ``should_stop``, so
    a training resumed from the checkpoint of the epoch that stopped it would train on.
    Subclasses save in ``on_train_epoch_end`` after calling this class's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopping = False  # early stopping's decision at the epoch being saved
        self._resume_stopped = False

    def state_dict(self) -> dict[str, Any]:
        return {"should_stop": self._stopping}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_stopped = bool(state_dict.get("should_stop", False))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Trainer.fit clears should_stop before restoring; set it again so the fit loop ends
        # before another epoch, as the uninterrupted run did.
        if self._resume_stopped:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stopping = bool(trainer.should_stop)
        super().on_train_epoch_end(trainer, pl_module)


class EpochCheckpoint(AfterEpochEndHooks, RayTrainReportCallback):
    """Ray Train's Lightning report callback (the epoch's checkpoint and metrics, every epoch),
    run after every other epoch-end hook (see ``AfterEpochEndHooks``)."""

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Ray's callback saves each epoch into <temp dir>/lightning_checkpoints-<job, run name,
        # rank>/<epoch> and deletes the epoch's folder once it is stored, but never the folder
        # around them: every training left one empty folder per rank in /tmp, for good.
        shutil.rmtree(self.tmpdir_prefix, ignore_errors=True)
        super().teardown(trainer, pl_module, stage)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # A failing fit calls this, not teardown; the folder may then hold a whole checkpoint.
        shutil.rmtree(self.tmpdir_prefix, ignore_errors=True)
        super().on_exception(trainer, pl_module, exception)


class RngState(pl.Callback):
    """Puts torch's random state (dropout masks; the shard order is a function of seed and
    epoch) into every checkpoint and restores it when a resumed run starts its next epoch,
    so a run resumed after a failure continues exactly as the uninterrupted run would.

    Every rank is seeded alike and draws alike, so rank 0's state (the one checkpointed) is
    every rank's. The state is applied when the resumed epoch starts, not when the checkpoint
    is loaded, so nothing Lightning does while restoring (the sanity check, loader set-up)
    can draw from it first.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        torch.set_rng_state(self._pending["cpu"])
        if "cuda" in self._pending and torch.cuda.is_available():
            torch.cuda.set_rng_state(self._pending["cuda"], device=pl_module.device)
        self._pending = None


class TestProbe(pl.callbacks.Checkpoint):
    """Test-only: each worker writes ``worker-<pid>.json`` (rank, node, pid, the epoch it
    started at, its first epoch's training rows, a fingerprint of its weights after each
    epoch) into ``$FAIRTRAIN_TEST_PROBE_DIR``; when
    that folder holds ``pause_after_epoch`` (k), the workers write ``paused`` after epoch k's
    checkpoint was reported and sleep, so the test can kill a process there.

    A ``Checkpoint`` only so that Lightning runs it with the checkpoint callback, after it
    (Lightning keeps the order among checkpoint callbacks, and the probe is added last)."""

    def __init__(self, folder: Path, pause_after: int | None, batches: Any) -> None:
        self.folder, self.pause_after, self.batches = folder, pause_after, batches
        self.record: dict[str, Any] = {}

    @classmethod
    def from_environment(cls, batches: Any) -> TestProbe | None:
        folder = os.environ.get(PROBE_DIR_ENV)
        if not folder:
            return None
        pause = Path(folder) / PAUSE_FILE
        return cls(Path(folder), int(pause.read_text()) if pause.exists() else None, batches)

    def _write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"worker-{os.getpid()}.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.record))
        path.with_suffix(".tmp").replace(path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        context = ray.train.get_context()
        self.batches.set_epoch(trainer.current_epoch)
        self.record = {
            "pid": os.getpid(),
            "rank": context.get_world_rank(),
            "world_size": context.get_world_size(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "start_epoch": trainer.current_epoch,
            "rows": self.batches.indices().tolist(),
            "epochs_done": [],
            "weights": [],
        }
        self._write()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["epochs_done"].append(trainer.current_epoch)
        # Every rank must hold the same weights after each step's gradient all-reduce.
        self.record["weights"].append([float(p.detach().double().sum()) for p in pl_module.parameters()])
        self._write()
        # A resumed run starts after its checkpoint's epoch, so it never pauses there again.
        if trainer.current_epoch == self.pause_after:
            (self.folder / "paused").write_text(str(os.getpid()))
            time.sleep(120)
