"""Shared by integration tests: a model trained with plain Lightning (no Ray, seconds) and
then taken through the real evaluate and register stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fairtrain import tracking
from fairtrain.data.preprocessing import Preprocessor
from fairtrain.lightning import pl
from fairtrain.models.export import save_model
from fairtrain.models.lightning_module import TabularClassifier
from fairtrain.stages.evaluate_stage import OUTPUTS as EVAL_OUTPUTS
from fairtrain.stages.evaluate_stage import evaluate_stage
from fairtrain.stages.register_stage import register_stage
from fairtrain.stages.train_stage import train_stage
from fairtrain.stages.training_inputs import features_and_target
from fairtrain.training.callbacks import execution_tags
from tests.helpers import quiet_trainer, undo_mlflow_state_with


def wait_for_pause(probe_dir: Path, timeout: float = 180, process: subprocess.Popen | None = None) -> None:
    """Until a worker under ``callbacks.TestProbe`` wrote ``paused`` into ``probe_dir`` (it
    sleeps there, after its epoch's checkpoint was reported), or fail: on ``timeout``, or when
    ``process`` (the stage) ended first."""
    path = probe_dir / "paused"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the training ended (rc {process.returncode}) before {path.name}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.2)
    # The checkpoint was reported before the pause; give the controller time to register it.
    time.sleep(3)


def stop_when_paused(stage: subprocess.Popen, probe_dir: Path) -> int:
    """SIGTERM (what `dvc repro` sends on Ctrl-C) to the stage once a worker paused after its
    epoch's checkpoint; the stage's exit code. The stage's process group is SIGKILLed if it
    is still there afterwards, whatever happened."""
    try:
        wait_for_pause(probe_dir, process=stage)
        stage.send_signal(signal.SIGTERM)
        return stage.wait(timeout=120)
    finally:
        if stage.poll() is None:
            os.killpg(stage.pid, signal.SIGKILL)


def train_with_ray(params, prepared, out: Path) -> dict:
    """The real train stage (Ray workers) into ``out``'s models/, metrics/ and plots/."""
    return train_stage(
        params,
        prepared["train"],
        prepared["val"],
        prepared["preprocessor"],
        out / "models",
        out / "models/mlflow_run.json",
        out / "metrics/train.json",
        out / "plots/train_history.json",
    )


def train_in_own_store(params, prepared, out: Path) -> None:
    """``train_with_ray`` logging to its own SQLite store, ``out``/mlflow.db (so two runs can
    be compared whole), working in ``out``: the experiments made there get their artifact
    folder in ``out``/mlruns, not in the directory the tests run from. The working directory,
    the environment and MLflow's active experiment are put back after, and its tracking URI
    is again what the restored environment says. ``out`` and ``prepared``'s paths must be
    absolute (``tmp_path``'s are)."""
    out = Path(out).resolve()
    uri = f"sqlite:///{out / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        undo_mlflow_state_with(patch)
        patch.chdir(out)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("Default")
        try:
            train_with_ray(params, prepared, out)
        finally:
            # Unsets $MLFLOW_TRACKING_URI too; leaving the context restores it.
            mlflow.set_tracking_uri(None)


def epoch_history(out: Path) -> list[dict]:
    """The per-epoch metrics the train stage wrote under ``out``, without the throughput
    (the one figure that differs between identical trainings)."""
    rows = json.loads((out / "plots/train_history.json").read_text())
    return [{k: v for k, v in r.items() if k != "samples_per_second"} for r in rows]


def train_plain(params, prepared, model_dir: Path, epochs: int) -> dict[str, str]:
    """Train with plain Lightning and export exactly as the train stage does; returns the
    execution tags rank 0 of the train stage would set on the run (none without training)."""
    pl.seed_everything(0, verbose=False)
    preprocessor = Preprocessor.from_dict(json.loads(prepared["preprocessor"].read_text()))
    x, y = features_and_target(pd.read_parquet(prepared["train"]), preprocessor, params)
    module = TabularClassifier(x.shape[1], params.train.hidden_sizes, 0.1, 1e-3, 1e-4)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=256, shuffle=True)
    tags = {}
    if epochs:
        trainer = quiet_trainer(epochs)
        trainer.fit(module, loader)
        tags = execution_tags(trainer, module)
    state = {k[len("model.") :]: v for k, v in module.state_dict().items() if k.startswith("model.")}
    save_model(
        model_dir,
        state,
        {"n_features": x.shape[1], "hidden_sizes": params.train.hidden_sizes, "dropout": 0.1},
    )
    return tags


def run_after_training(params, prepared, out: Path, epochs: int) -> dict:
    """A run like the train stage's, then the real evaluate and register stages."""
    tags = train_plain(params, prepared, out / "models/model", epochs)
    experiment_id = tracking.configure(params.tracking.experiment)
    with mlflow.start_run(tags=tags) as run:
        ref = tracking.RunRef(run.info.run_id, experiment_id, tracking.resolve_tracking_uri())
    ref.save(out / "models/mlflow_run.json")
    outputs = {n: out / f"eval/{n}.{'parquet' if n == 'predictions' else 'json'}" for n in EVAL_OUTPUTS}
    outputs["figures"] = out / "eval/figures"
    evaluate_stage(
        params,
        prepared["train"],
        prepared["val"],
        prepared["test"],
        prepared["preprocessor"],
        out / "models/model",
        out / "models/mlflow_run.json",
        outputs,
    )
    record = register_again(params, prepared, out)
    return {"ref": ref, "outputs": outputs, "record": record}


def register_again(params, prepared, out: Path) -> dict:
    """The register stage on the outputs ``run_after_training`` left in ``out``."""
    return register_stage(
        params,
        out / "models/model",
        prepared["preprocessor"],
        prepared["test"],
        out / "eval/evaluation.json",
        out / "eval/gates.json",
        out / "models/mlflow_run.json",
        out / "models/registered.json",
        data_path=prepared["raw"],
        project_root=Path.cwd(),
        mitigation_path=out / "eval/mitigation.json",
    )
