"""What happens when tracking goes wrong: a server that is down, several pipelines at once."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import mlflow
import pytest
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)

from fairtrain import tracking
from fairtrain.errors import TrackingError
from fairtrain.stages.train_stage import train_stage
from tests.helpers import undo_mlflow_state_with
from tests.integration.pipeline import register_again, run_after_training

pytestmark = pytest.mark.slow

# What one pipeline does to the store, short of training: the same entry point the stages use.
WRITER = textwrap.dedent("""
    import sys
    import mlflow
    from mlflow.tracking import MlflowClient
    from fairtrain import tracking
    tracking.configure("fairtrain", sys.argv[1])
    client = MlflowClient()
    for _ in range(3):
        with mlflow.start_run() as run:
            mlflow.log_params({f"train.p{i}": i for i in range(20)})
            for epoch in range(40):
                mlflow.log_metric("val_loss", 1 / (epoch + 1), step=epoch)
            mlflow.log_metrics({f"group/race/g{i}/accuracy": i / 60 for i in range(60)})
        if not client.search_registered_models("name = 'concurrent'"):
            try:
                client.create_registered_model("concurrent")
            except Exception:
                pass  # the other pipeline created it first
        version = client.create_model_version("concurrent", f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_registered_model_alias("concurrent", "challenger", version.version)
""")


def test_pipelines_starting_together_on_a_fresh_sqlite_store_all_succeed(tmp_path):
    # Without the lock in tracking.initialise_sqlite_store two of three writers crashed with
    # "duplicate column name" (both running MLflow's schema migrations).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(tracking.__file__).parents[1])}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in writers]
    for writer, output in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, output[-2000:]
        assert "database is locked" not in output
    client = mlflow.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert len(client.search_runs(experiments)) == 9
    assert len(client.search_model_versions("name = 'concurrent'")) == 9


def test_an_unreachable_server_fails_fast_and_names_itself(closed_port_uri, monkeypatch):
    for name in tracking.HTTP_DEFAULTS:  # unset, as for a user who never heard of them
        monkeypatch.delenv(name, raising=False)
    names_itself = rf"the MLflow tracking server at {re.escape(closed_port_uri)} is not usable"
    with pytest.raises(TrackingError, match=names_itself):
        tracking.configure("fairtrain")
    # What makes it fast: bounded retries, seconds rather than MLflow's default of several
    # minutes (7 retries, backoff factor 2, 120 s timeout), as MLflow's HTTP client reads them
    # for every request. A hang would end at pytest's timeout.
    assert (
        MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(),
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
        MLFLOW_HTTP_REQUEST_TIMEOUT.get(),
    ) == (3, 1, 15)


class _Unavailable(BaseHTTPRequestHandler):
    """Answers every request 503 (a retryable status for MLflow's client) and counts them."""

    requests: ClassVar[list[str]] = []

    def _refuse(self) -> None:
        type(self).requests.append(self.path)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _refuse

    def log_message(self, *args) -> None:  # quiet
        pass


def test_a_server_that_keeps_failing_is_asked_a_bounded_number_of_times(monkeypatch):
    """The other half of failing fast, without a clock: the stage's one reachability request
    is retried tracking.HTTP_DEFAULTS' 3 times, not MLflow's default 7."""
    undo_mlflow_state_with(monkeypatch)
    for name in tracking.HTTP_DEFAULTS:  # unset, as for a user who never heard of them
        monkeypatch.delenv(name, raising=False)
    _Unavailable.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(TrackingError, match=rf"tracking server at {re.escape(uri)} is not usable"):
            tracking.configure("fairtrain")
    finally:
        server.shutdown()
        server.server_close()
        mlflow.set_tracking_uri(None)
    retries = int(tracking.HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    assert len(_Unavailable.requests) == 1 + retries, _Unavailable.requests
    assert {path.split("?")[0] for path in _Unavailable.requests} == {"/api/2.0/mlflow/experiments/search"}


def test_train_with_the_server_down_stops_before_training_and_writes_nothing(
    closed_port_uri, prepared, small_params, tmp_path
):
    with pytest.raises(TrackingError, match="not usable"):
        train_stage(
            small_params,
            prepared["train"],
            prepared["val"],
            prepared["preprocessor"],
            tmp_path / "models",
            tmp_path / "models/mlflow_run.json",
            tmp_path / "metrics/train.json",
            tmp_path / "plots/train_history.json",
        )
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_register_can_be_rerun_alone_once_the_server_is_back(
    lenient, prepared, mlflow_store, tmp_path, monkeypatch
):
    first = run_after_training(lenient, prepared, tmp_path, epochs=1)
    record = tmp_path / "models/registered.json"
    recorded = record.read_text()
    model_files = {p: p.read_bytes() for p in (tmp_path / "models/model").iterdir()}

    def register() -> dict:
        return register_again(lenient, prepared, tmp_path)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    with pytest.raises(TrackingError, match="not usable"):
        register()
    # Nothing local was lost or half-written.
    assert record.read_text() == recorded
    assert {p: p.read_bytes() for p in (tmp_path / "models/model").iterdir()} == model_files

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    again = register()
    assert again["version"] == first["record"]["version"]
