"""Ray Tune search end to end: 2 trials, 2 epochs, 4,000 rows, a real local Ray and MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import mlflow
import pytest
import ray
import yaml

from fairtrain.config import load_params
from fairtrain.search_runs import ERROR_TAG, FAILED_TRIALS_TAG, STOPPED_TAG
from fairtrain.stages.tune_stage import tune_stage
from fairtrain.training.callbacks import PAUSE_FILE, PROBE_DIR_ENV
from fairtrain.training.tags import DEVICE_TAG, WORLD_SIZE_TAG
from fairtrain.training.trainer import STORAGE_ENV
from tests.helpers import PROJECT_ROOT, shrink_params
from tests.integration.pipeline import wait_for_pause
from tests.integration.servers import driver_only_credentials

pytestmark = pytest.mark.slow


# The good rate first: trials run one at a time, so when the poor one reaches ASHA's rung
# (epoch 1) there is a better result there and ASHA stops it.
TWO_TRIALS = {
    "space": {"learning_rate": [0.01, 0.0001]},
    "max_epochs": 2,
    "grace_period": 1,
    "workers_per_trial": 1,
}


def _start_search(params: dict, prepared: dict, folder: Path, **env: str) -> subprocess.Popen:
    """``pipelines/tune.py --write-params`` with ``params`` in ``folder``/params.yaml, its own
    local Ray and an SQLite store in ``folder``."""
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", **env}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)])
    env.pop("RAY_ADDRESS", None)
    env.pop(STORAGE_ENV, None)
    return subprocess.Popen(
        [
            sys.executable, str(PROJECT_ROOT / "pipelines/tune.py"), "--params", str(params_file),
            "--train", str(prepared["train"]), "--val", str(prepared["val"]),
            "--preprocessor", str(prepared["preprocessor"]), "--write-params",
        ],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _search(params: dict, prepared: dict, folder: Path, **env: str) -> subprocess.CompletedProcess:
    process = _start_search(params, prepared, folder, **env)
    try:
        out, err = process.communicate(timeout=400)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _runs(folder: Path, experiment: str) -> tuple[mlflow.MlflowClient, list]:
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_search_logs_each_trial_as_a_child_run_and_writes_the_best_back(prepared, small_params, tmp_path):
    raw = small_params.model_dump(mode="json", by_alias=True)
    raw["tune"] = TWO_TRIALS
    leftovers = set(Path(tempfile.gettempdir()).glob("fairtrain-tune-*"))
    result = _search(raw, prepared, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    # Its storage (trials' checkpoints, Tune's state) was a temporary folder, removed at the end.
    assert set(Path(tempfile.gettempdir()).glob("fairtrain-tune-*")) == leftovers
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["trials"] == 2
    assert summary["stopped_early"] == 1, "ASHA stopped the trailing trial after its first epoch"
    # A learning rate of 0.0001 for 2 epochs cannot beat 0.01 on val_loss.
    assert summary["best_overrides"] == {"learning_rate": 0.01}
    assert summary["failed"] == 0
    assert load_params(tmp_path / "params.yaml").train.learning_rate == 0.01

    client, runs = _runs(tmp_path, small_params.tracking.experiment)
    parent = next(r for r in runs if r.info.run_id == summary["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2, "one parent, one child per trial, nothing else"
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs), "no run left RUNNING"
    by_rate = {c.data.params["train.learning_rate"]: c for c in children}
    # It ended by returning after its last epoch, not torn down by Tune at ASHA's max_t (which
    # once left its Train worker group's CPU reserved and hung the next trial).
    assert by_rate["0.01"].info.status == "FINISHED"
    assert STOPPED_TAG not in by_rate["0.01"].data.tags
    assert by_rate["0.0001"].info.status == "KILLED"
    assert by_rate["0.0001"].data.tags.get(STOPPED_TAG) == "true"
    assert sorted(c.data.params["train.learning_rate"] for c in children) == ["0.0001", "0.01"]
    for child, epochs in ((by_rate["0.01"], 2), (by_rate["0.0001"], 1)):
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(epochs)), "each epoch once"
        throughput = client.get_metric_history(child.info.run_id, "samples_per_second")
        assert [m.step for m in throughput] == list(range(epochs))
        assert all(m.value > 0 for m in throughput)
        assert child.info.end_time >= child.info.start_time
    # A trial that ran to its end tags its run with where it trained (one ASHA tears down, not).
    assert by_rate["0.01"].data.tags.get(WORLD_SIZE_TAG) == "1"
    # One trial at a time: each child opens when its trial starts and ends when Tune ends it.
    assert by_rate["0.0001"].info.start_time >= by_rate["0.01"].info.end_time
    assert parent.data.params["best.learning_rate"] == "0.01"
    assert parent.data.tags[FAILED_TRIALS_TAG] == "0"


def test_trials_need_no_tracking_credentials(prepared, small_params, tmp_path, monkeypatch):
    """On a cluster, the nodes that run the trials may lack the tracking server's credentials.
    Here the trials lack them because the Ray instance (whose environment they inherit)
    started before the driver got them; the server runs MLflow's basic-auth app. The driver
    writes every child run, so the search completes and nothing is missing but the trials'
    execution tags, which only the trials know."""
    params = shrink_params(small_params, tune=TWO_TRIALS)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        with driver_only_credentials(tmp_path, monkeypatch) as uri:
            summary = tune_stage(params, prepared["train"], prepared["val"], prepared["preprocessor"])
            client = mlflow.MlflowClient(uri)
            children = client.search_runs(
                [client.get_experiment_by_name(params.tracking.experiment).experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'",
            )
            histories = {
                c.info.run_id: client.get_metric_history(c.info.run_id, "val_loss") for c in children
            }
    finally:
        ray.shutdown()
    # The trials really were refused: their search for their own run came back 401.
    assert '"POST /api/2.0/mlflow/runs/search HTTP/1.1" 401' in (tmp_path / "server/server.log").read_text()
    assert summary["best_overrides"] == {"learning_rate": 0.01} and summary["stopped_early"] == 1
    by_rate = {c.data.params["train.learning_rate"]: c for c in children}
    assert {rate: c.info.status for rate, c in by_rate.items()} == {"0.01": "FINISHED", "0.0001": "KILLED"}
    assert [m.step for m in histories[by_rate["0.01"].info.run_id]] == [0, 1]
    assert [m.step for m in histories[by_rate["0.0001"].info.run_id]] == [0]
    assert all(DEVICE_TAG not in c.data.tags for c in children), "documented: not backfilled"


def test_a_trial_whose_worker_dies_fails_alone_and_params_are_left_unchanged(
    prepared, small_params, tmp_path
):
    """The first trial's worker process is SIGKILLed after its first epoch, with max_failures
    0. Its run ends FAILED with the reason, the other trial still runs, the best is chosen
    among the trials that did not fail, and --write-params refuses to change params.yaml."""
    raw = shrink_params(small_params, train={"max_failures": 0}).model_dump(mode="json", by_alias=True)
    raw["tune"] = TWO_TRIALS
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / PAUSE_FILE).write_text("0")  # workers pause after epoch 0's report
    killed: dict = {}

    def kill_the_paused_worker() -> None:
        wait_for_pause(probe)
        (probe / PAUSE_FILE).unlink()  # the next trial trains through
        killed["pid"] = int((probe / "paused").read_text())
        os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_paused_worker, daemon=True)
    killer.start()
    result = _search(raw, prepared, tmp_path, **{PROBE_DIR_ENV: str(probe)})
    killer.join(timeout=5)
    assert "pid" in killed, "the test must have killed a worker"

    assert result.returncode == 1, result.stderr[-4000:]
    assert "1 of 2 trials failed" in result.stderr and "is left unchanged" in result.stderr
    assert (
        "trial trial-learning_rate=0.01 failed: TrainingError: distributed training failed" in result.stderr
    )
    assert (tmp_path / "params.yaml").read_text() == yaml.safe_dump(raw), "params.yaml untouched"
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    # The 0.01 trial led after epoch 0, so ASHA stopped the other one there; still, the
    # failed trial is not the best: the best of the others is.
    assert summary["failed"] == 1 and summary["best_overrides"] == {"learning_rate": 0.0001}

    client, runs = _runs(tmp_path, small_params.tracking.experiment)
    parent = next(r for r in runs if r.info.run_id == summary["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags[FAILED_TRIALS_TAG] == "1"
    by_rate = {r.data.params["train.learning_rate"]: r for r in runs if r is not parent}
    assert len(runs) == 3, "one parent, one child per trial, nothing else"
    failed = by_rate["0.01"]
    assert failed.info.status == "FAILED"
    assert "died" in failed.data.tags[ERROR_TAG], failed.data.tags[ERROR_TAG]
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "val_loss")] == [0]
    assert by_rate["0.0001"].info.status == "KILLED" and by_rate["0.0001"].data.tags[STOPPED_TAG] == "true"


def test_a_search_stopped_midway_leaves_no_run_running_and_params_unchanged(prepared, small_params, tmp_path):
    """SIGTERM to the search (a CI job cancelled) while its first trial is paused after its
    first epoch: the search stops with exit 130, the parent run and the trial's run are
    KILLED, the trial never started has no run, params.yaml is untouched and the temporary
    storage is removed."""
    raw = small_params.model_dump(mode="json", by_alias=True)
    raw["tune"] = TWO_TRIALS
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / PAUSE_FILE).write_text("0")  # the first trial's worker sleeps after epoch 0
    leftovers = set(Path(tempfile.gettempdir()).glob("fairtrain-tune-*"))
    process = _start_search(raw, prepared, tmp_path, **{PROBE_DIR_ENV: str(probe)})
    try:
        wait_for_pause(probe, process=process)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=180)
    finally:
        process.kill()

    assert process.returncode == 130, err[-4000:]
    assert "fairtrain tune: interrupted" in err
    # The interrupt came out of tuner.fit (run_search's except path closed the child), not
    # through Tune's own Ctrl-C handling, which returns and is caught by the trial count.
    assert "the search stopped with" not in err
    assert (tmp_path / "params.yaml").read_text() == yaml.safe_dump(raw), "params.yaml untouched"
    assert set(Path(tempfile.gettempdir()).glob("fairtrain-tune-*")) == leftovers
    client, runs = _runs(tmp_path, small_params.tracking.experiment)
    assert len(runs) == 2, "the parent and the one trial that started"
    assert {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert child.data.params["train.learning_rate"] == "0.01"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")] == [0]


def test_the_trials_get_the_data_from_the_object_store_not_inside_the_trainable(
    small_params, tmp_path, monkeypatch
):
    """Tune pickles the trainable for every trial; the data must not be in it (13 MiB for
    Adult drew Ray's "very large" warning, and above 100 MB Ray refuses the trainable)."""
    import numpy as np

    from fairtrain.search import search_trainable
    from fairtrain.stages.training_inputs import ModelInputs
    from fairtrain.training.trainer import TrainingData

    rows = 300_000  # 24 MB of features
    data = TrainingData(
        np.ones((rows, 20), np.float32), np.ones(rows, np.float32), np.ones((8, 20), np.float32), np.ones(8)
    )
    inputs = ModelInputs(feature_groups={}, numeric=[], categorical=[], rows=rows, positives=rows // 2)
    params = shrink_params(small_params, tune={"space": {"learning_rate": [0.01]}})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        trainable = search_trainable(params, data, inputs, "0" * 32, "0", "sqlite:///unused.db", tmp_path)
        pickled = len(ray.cloudpickle.dumps(trainable))
    finally:
        ray.shutdown()
    assert pickled < 1 << 20, f"the trainable pickles to {pickled:,} bytes"
