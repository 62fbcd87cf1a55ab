"""Fixtures shared by every test tier: the real params, samples of the real data, and
isolated MLflow stores. Nothing here reaches beyond loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fairtrain.config import Params, load_params
from tests.helpers import PROJECT_ROOT, undo_mlflow_state_with

# Keep tests offline and quiet: no usage statistics from Ray, MLflow or DVC.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def project_params() -> Params:
    return load_params(PROJECT_ROOT / "params.yaml")


@pytest.fixture(scope="session")
def adult_raw() -> pd.DataFrame:
    """The embedded Adult file exactly as users have it (all cells as strings)."""
    return pd.read_csv(PROJECT_ROOT / "data/raw/adult.csv.gz", dtype=str, keep_default_na=False)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store for one test, selected the way users select a server.
    Afterwards nothing process-wide points at the deleted store: MLflow's tracking URI is
    reset, its active experiment and the variables it and the stages export are restored."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    undo_mlflow_state_with(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    # Before the experiment is made: its artifact folder is ./mlruns at that moment, and the
    # runs' artifacts belong under tmp_path, not in the checkout the tests run from.
    monkeypatch.chdir(tmp_path)
    # MLflow remembers the active experiment id process-wide; an id from another test's store
    # would be looked up in this one.
    mlflow.set_experiment("Default")
    yield uri
    try:
        if mlflow.active_run():
            mlflow.end_run()
    finally:
        # Also unsets $MLFLOW_TRACKING_URI; monkeypatch's undo, which runs after this teardown
        # (this fixture depends on it), then restores the variable as it was before the test.
        mlflow.set_tracking_uri(None)


@pytest.fixture
def closed_port_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tracking URI on loopback where nothing listens, exported as MLFLOW_TRACKING_URI.
    Afterwards MLflow's tracking URI is reset and monkeypatch restores the environment, the
    HTTP retry settings the stages set included."""
    import socket

    import mlflow

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    undo_mlflow_state_with(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    mlflow.set_tracking_uri(None)
