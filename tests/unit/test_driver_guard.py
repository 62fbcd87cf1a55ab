"""Two identical trainings never run over each other: one lock per key and model directory,
and RUNNING runs are closed only when their driver is gone (real SQLite store, real
processes)."""

from __future__ import annotations

import errno
import fcntl
import json
import subprocess
import sys
import textwrap

import psutil
import pytest
from mlflow import MlflowClient

from fairtrain.errors import TrainingError
from fairtrain.stages.train_stage import close_abandoned_runs
from fairtrain.training.driver_guard import DRIVER_TAG, _process, driver_alive, driver_tag, exclusive_training


def test_a_second_identical_training_in_the_same_model_directory_fails_fast(tmp_path):
    lock = tmp_path / ".ray-runs" / "fairtrain-train-abc.lock"
    with exclusive_training(lock):
        assert lock.exists()
        with pytest.raises(TrainingError) as error, exclusive_training(lock):
            pass
        message = str(error.value)
        assert "already running" in message and str(lock.parent) in message
        assert f"pid {psutil.Process().pid}" in message  # names the process holding it
    assert not lock.exists()  # nothing left in the model directory DVC hashes
    with exclusive_training(lock):  # free again once the first training ended
        pass


def test_the_lock_of_a_killed_driver_does_not_block_the_rerun(tmp_path):
    lock = tmp_path / "fairtrain-train-abc.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from fairtrain.training.driver_guard import exclusive_training
                with exclusive_training(Path({str(lock)!r})):
                    print("locked", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingError, match=f"pid {holder.pid} on"), exclusive_training(lock):
            pass
        holder.kill()  # SIGKILL: no cleanup runs, the file stays behind
        holder.wait()
        assert lock.exists()
        with exclusive_training(lock):  # the kernel released the lock with the process
            pass
    finally:
        holder.kill()
        holder.wait()


def _dead_driver() -> str:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tag = json.dumps(_process(process.pid))  # taken while it runs, as the stage tags its run
    finally:
        process.kill()
        process.wait()
    return tag


def test_driver_alive_tells_a_running_driver_from_a_gone_one():
    mine = json.loads(driver_tag())
    assert driver_alive(driver_tag())
    assert not driver_alive(_dead_driver())
    assert not driver_alive(json.dumps({**mine, "started": "1"}))  # its pid, reused by another process
    assert not driver_alive(json.dumps({**mine, "boot": "an earlier boot"}))  # rebooted since
    assert driver_alive(json.dumps({**mine, "host": "elsewhere.invalid"}))  # cannot check: leave it
    assert driver_alive(json.dumps({**mine, "pid_namespace": "pid:[1]"}))  # another container
    assert not driver_alive(None) and not driver_alive("not json") and not driver_alive("{}")


def test_a_file_system_without_locks_trains_unguarded_with_a_warning(tmp_path, monkeypatch, caplog):
    # ENOLCK cannot be produced on this machine's file systems; it is what an NFS mount
    # without a lock manager returns.
    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = False
    with exclusive_training(tmp_path / "k.lock"):
        ran = True
    assert ran and "not guarding against a concurrent identical training" in caplog.text


def test_only_runs_whose_driver_is_gone_are_closed(mlflow_store):
    client = MlflowClient(mlflow_store)
    experiment_id = client.create_experiment("train")
    key = {"fairtrain.training_key": "k1"}

    def running(**tags: str) -> str:
        return client.create_run(experiment_id, tags={**key, **tags}).info.run_id

    live = running(**{DRIVER_TAG: driver_tag()})  # the same training in another workspace
    remote = running(**{DRIVER_TAG: json.dumps({**json.loads(driver_tag()), "host": "other.invalid"})})
    killed = running(**{DRIVER_TAG: _dead_driver()})
    untagged = running()  # left by a driver from before the tag existed
    resumed = running(**{DRIVER_TAG: _dead_driver()})  # the one being resumed now
    other_key = client.create_run(
        experiment_id, tags={"fairtrain.training_key": "k2", DRIVER_TAG: _dead_driver()}
    ).info.run_id

    close_abandoned_runs(experiment_id, "k1", keep=resumed)

    status = {
        run_id: client.get_run(run_id).info.status
        for run_id in (live, remote, killed, untagged, resumed, other_key)
    }
    assert status == {
        live: "RUNNING",
        remote: "RUNNING",
        killed: "KILLED",
        untagged: "KILLED",
        resumed: "RUNNING",
        other_key: "RUNNING",
    }


def test_a_killed_search_leaves_no_run_running_after_the_next_search_starts(mlflow_store):
    """A search whose driver was SIGKILLed left its parent and its running trial's child
    RUNNING; the next search closes both KILLED. A live search in another workspace, its
    children, and its finished trials are left as they are."""
    from fairtrain.stages.tune_stage import close_abandoned_searches

    client = MlflowClient(mlflow_store)
    experiment_id = client.create_experiment("tune")

    def search(driver: str) -> tuple[str, str, str]:
        parent = client.create_run(experiment_id, tags={"fairtrain.stage": "tune", DRIVER_TAG: driver})
        parent_id = parent.info.run_id
        # Trial runs carry the stage tag too (search_runs), but no driver tag.
        child = {"mlflow.parentRunId": parent_id, "fairtrain.stage": "tune"}
        done = client.create_run(experiment_id, tags=child).info.run_id
        client.set_terminated(done, "FINISHED")
        trial = client.create_run(experiment_id, tags=child).info.run_id
        return parent_id, done, trial

    killed, killed_done, killed_trial = search(_dead_driver())
    live, _, live_trial = search(driver_tag())
    current = client.create_run(experiment_id, tags={"fairtrain.stage": "tune"}).info.run_id
    training = client.create_run(experiment_id, tags={DRIVER_TAG: _dead_driver()}).info.run_id

    close_abandoned_searches(experiment_id, keep=current)

    status = {run: client.get_run(run).info.status for run in (killed, killed_done, killed_trial)}
    assert status == {killed: "KILLED", killed_done: "FINISHED", killed_trial: "KILLED"}
    assert {client.get_run(run).info.status for run in (live, live_trial, current, training)} == {"RUNNING"}
