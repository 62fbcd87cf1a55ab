"""Starting and stopping real servers on loopback for integration tests."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
import requests

from tests.helpers import undo_mlflow_state_with


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM the server's whole process group (uvicorn workers included), then SIGKILL."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_until_up(process: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode} before {url} answered:\n{log.read_text()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer 200 within {timeout_s} s:\n{log.read_text()[-5000:]}")


@contextmanager
def running_server(
    command: list[str], env: dict[str, str], cwd: Path, log: Path, health_url: str, timeout_s: float
) -> Iterator[subprocess.Popen]:
    """Start ``command`` in its own process group (so its workers stop with it), wait until
    ``health_url`` answers 200, and stop the whole group afterwards."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(process, health_url, log, timeout_s)
        yield process
    finally:
        stop_process_group(process)


def mlflow_cli(args: list[str], port: int, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The venv's ``mlflow`` with ``args``, serving on loopback ``port`` with one worker, and
    ``env`` with the venv's bin first on PATH: MLflow's servers exec ``uvicorn`` by name, even
    when the tests run through the venv's python without activating it."""
    bin_dir = str(Path(sys.executable).parent)
    command = [
        str(Path(bin_dir) / "mlflow"),
        *args,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return command, {**env, "PATH": os.pathsep.join([bin_dir, env.get("PATH", "")])}


@contextmanager
def mlflow_server(
    root: Path, backend_store: str, admin_password: str | None = None, timeout_s: float = 120
) -> Iterator[str]:
    """``mlflow server`` on a free loopback port with ``backend_store`` and proxied artifacts
    under ``root``; yields its URI. With ``admin_password`` it runs MLflow's basic-auth app,
    whose admin is ``admin`` with that password (its user database is under ``root`` too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH_"))}
    # The server's background job runner (GenAI scorers, periodic tasks) starts eight extra
    # processes; the pipeline uses none of it, and this machine has two cores.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    port = free_port()
    command, env = mlflow_cli(
        ["server", "--backend-store-uri", backend_store, "--artifacts-destination", str(root / "artifacts")],
        port,
        env,
    )
    if admin_password is not None:
        command += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin_password
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "test-only-csrf-key"
    uri = f"http://127.0.0.1:{port}"
    with running_server(command, env, root, root / "server.log", f"{uri}/health", timeout_s):
        yield uri


@contextmanager
def driver_only_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A basic-auth ``mlflow server`` under ``tmp_path``/server whose credentials only this
    process gets, in its environment, from now on (a Ray instance started before does not
    see them); the process works in ``tmp_path``. Yields the server's URI. Once the server
    stopped, MLflow's tracking URI no longer points at it; ``monkeypatch``'s undo restores the
    environment and MLflow's active experiment."""
    root = tmp_path / "server"
    root.mkdir()
    password = "test-only-password"  # a throwaway server in a temporary folder
    undo_mlflow_state_with(monkeypatch)
    with mlflow_server(root, f"sqlite:///{root / 'server.db'}", admin_password=password) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        mlflow.set_tracking_uri(uri)
        monkeypatch.chdir(tmp_path)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(None)  # unsets $MLFLOW_TRACKING_URI as well


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; yields a SQLAlchemy URI to an
    empty database. As root (CI) the server runs as the 'postgres' user, which it requires.
    Skips the test where PostgreSQL's server binaries are not installed."""
    initdb, postgres = _postgres_bin("initdb"), _postgres_bin("postgres")
    if not (initdb and postgres):
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="fairtrain-pg-"))  # /tmp: reachable by another user
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")  # created by Debian's postgresql package
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", free_port()
    process = None
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "fairtrain", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        process = subprocess.Popen(
            [
                *as_user,
                postgres,
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="fairtrain", dbname="postgres")
                conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
                conn.cursor().execute("CREATE DATABASE mlflow")
                conn.close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"PostgreSQL did not start on port {port}")
                time.sleep(0.5)
        # psycopg2 named explicitly: SQLAlchemy 2.1 defaults to psycopg 3 for "postgresql://".
        yield f"postgresql+psycopg2://fairtrain@127.0.0.1:{port}/mlflow"
    finally:
        if process is not None:
            stop_process_group(process)
        shutil.rmtree(root, ignore_errors=True)
