"""Keeps two identical trainings (same params and data, so the same training key) from
running over each other.

A training resumes from whatever its key's record and checkpoints hold, and closes as
KILLED the RUNNING runs a killed driver of the same key left behind. Both assume only one
training of a key runs at a time, so:

- within one model directory, ``exclusive_training`` holds an exclusive lock for the
  training; a second identical training there fails at once with a clear error instead of
  reading and overwriting the first one's checkpoints. The kernel drops the lock when its
  process dies, even by SIGKILL, so a rerun after a crash is never locked out. (flock is
  per machine: a model directory on NFS shared by several hosts is not covered);
- across model directories (``dvc exp run --queue`` runs each experiment in a workspace of
  its own, all logging to one MLflow store), every training run is tagged with its driver,
  and ``driver_alive`` tells a run whose driver is still running from one a killed driver
  left behind.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from fairtrain.errors import TrainingError

log = logging.getLogger(__name__)

DRIVER_TAG = "fairtrain.driver"


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:  # not Linux, or not readable here
        return None


def _start_ticks(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat): exact,
    and unlike a wall-clock start time not moved by clock adjustments; None off Linux."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return stat.rpartition(")")[2].split()[19]  # fields after "pid (comm)" start at field 3


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _started(pid: int) -> str:
    """When ``pid`` started: clock ticks since boot on Linux, psutil's start time elsewhere
    (raises ``psutil.Error`` when there is no such process)."""
    return _start_ticks(pid) or str(psutil.Process(pid).create_time())


def _machine() -> dict[str, object]:
    """Where a pid means something: a host name can be shared (cloned machines, containers),
    a boot id changes with every reboot and a pid is only meaningful inside its namespace."""
    return {
        "host": socket.gethostname(),
        "boot": _read("/proc/sys/kernel/random/boot_id"),
        "pid_namespace": _pid_namespace(),
    }


def _process(pid: int) -> dict[str, object]:
    """What identifies process ``pid`` of this machine (a pid alone can be reused)."""
    return {**_machine(), "pid": pid, "started": _started(pid)}


def driver_tag() -> str:
    """The value of ``DRIVER_TAG`` for a run this process drives."""
    return json.dumps(_process(os.getpid()), sort_keys=True)


def driver_alive(tag: str | None) -> bool:
    """Whether the driver named by a run's ``DRIVER_TAG`` may still be running.

    Gone: a missing or unreadable tag, a host that has rebooted since (same host name, other
    boot id), or no process with that pid and start time (a reused pid does not count). Left
    alone, as possibly alive: a driver on another host or in another pid namespace, which this
    process cannot see."""
    try:
        driver = json.loads(tag or "")
        pid = int(driver["pid"])
        host, boot, namespace = driver["host"], driver.get("boot"), driver.get("pid_namespace")
    except (ValueError, KeyError, TypeError):
        return False
    here = _machine()
    if host != here["host"]:
        return True
    if boot != here["boot"]:
        return False
    if namespace != here["pid_namespace"]:
        return True
    try:
        return _started(pid) == str(driver.get("started"))
    except (psutil.Error, IndexError):  # no such process, or an unreadable /proc entry
        return False


def _same_file(path: Path, descriptor: int) -> bool:
    try:
        on_disk, held = os.stat(path), os.fstat(descriptor)
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _acquire(lock_path: Path):
    """The open, exclusively locked lock file; None where the file system cannot lock."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 (held open while the training runs)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise TrainingError(
                f"a training with the same params and data is already running with this model "
                f"directory ({holder}; lock {lock_path}); wait for it to finish or stop it (a rerun "
                f"afterwards resumes from its last checkpoint), or change params to train something else"
            ) from None
        except OSError as error:  # e.g. ENOLCK on an NFS mount without a lock manager
            handle.close()
            log.warning(
                "cannot lock %s (%s); not guarding against a concurrent identical training", lock_path, error
            )
            return None
        # The previous holder removes the file when it finishes; a lock taken on that removed
        # file would not exclude the next process, which creates a new one. Take it again.
        if _same_file(lock_path, handle.fileno()):
            return handle
        handle.close()


@contextmanager
def exclusive_training(lock_path: Path) -> Iterator[None]:
    """Hold ``lock_path`` exclusively for the block, or raise ``TrainingError`` naming the
    process that holds it. The file is removed when the block ends, so a finished training
    leaves nothing behind. On a file system without flock support the block runs unguarded,
    with a warning: the lock is a safety net, not a reason to refuse to train."""
    handle = _acquire(lock_path)
    if handle is None:
        yield
        return
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        handle.close()  # closing releases the lock
