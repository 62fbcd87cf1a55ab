"""Keeps two identical trainings (same params and data, so the same training key) from
running over each other.

A training resumes from whatever its key's record and checkpoints hold, and closes as
KILLED the RUNNING runs a killed driver of the same key left behind. Both assume only one
training of a key runs at a time, so:

- within one model directory, ``exclusive_training`` holds an exclusive lock for the
  training; a second identical training there fails at once with a clear error instead of
  reading and overwriting the first one's checkpoints. The kernel drops the lock when its
  process dies, even by SIGKILL, so a rerun after a crash is never locked out;
- across model directories (``dvc exp run --queue`` runs each experiment in a workspace of
  its own, all logging to one MLflow store), every training run is tagged with its driver
  (host, pid, process start time), and ``driver_alive`` tells a run whose driver is still
  running from one a killed driver left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from fairtrain.errors import TrainingError

DRIVER_TAG = "fairtrain.driver"


def _this_process() -> dict[str, object]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
    }


def driver_tag() -> str:
    """The value of ``DRIVER_TAG`` for a run this process drives."""
    return json.dumps(_this_process(), sort_keys=True)


def driver_alive(tag: str | None) -> bool:
    """Whether the driver named by a run's ``DRIVER_TAG`` may still be running: its process
    is alive on this host (same pid and start time, so a reused pid does not count), or it ran
    on another host, which this one cannot see (such a run is left alone). A missing or
    unreadable tag counts as gone."""
    try:
        driver = json.loads(tag or "")
        host, pid, started = str(driver["host"]), int(driver["pid"]), float(driver["started"])
    except (ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return True
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1e-3
    except psutil.Error:  # no such process, or not ours to inspect
        return False


def _same_file(path: Path, descriptor: int) -> bool:
    try:
        on_disk, held = os.stat(path), os.fstat(descriptor)
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


@contextmanager
def exclusive_training(lock_path: Path) -> Iterator[None]:
    """Hold ``lock_path`` exclusively for the block, or raise ``TrainingError`` naming the
    process that holds it. The file is removed when the block ends (it sits in the model
    directory, which DVC hashes)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 (held open for the whole block)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise TrainingError(
                f"a training with the same params and data is already running from {lock_path.parent} "
                f"({holder}); wait for it to finish or stop it (a rerun afterwards resumes from its "
                f"last checkpoint), or change params to train something else"
            ) from None
        # The previous holder removes the file when it finishes; a lock taken on that removed
        # file would not exclude the next process, which creates a new one. Take it again.
        if _same_file(lock_path, handle.fileno()):
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        me = _this_process()
        handle.write(f"pid {me['pid']} on {me['host']}")
        handle.flush()
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        handle.close()  # closing releases the lock
