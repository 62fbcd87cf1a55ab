"""The pipeline against a real ``mlflow server`` over HTTP, as a team would run it.

A tracking server (SQLite backend, proxied artifacts in a temporary folder) runs as a
subprocess on a free loopback port; ``MLFLOW_TRACKING_URI`` points at it over HTTP; the
real evaluate and register stages run twice, and everything is read back through the
server's REST API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from fairtrain.io import file_sha256, json_sha256
from tests.helpers import undo_mlflow_state_with
from tests.integration.pipeline import run_after_training
from tests.integration.servers import mlflow_server, postgres_cluster

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 120


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store(request, tmp_path: Path) -> Iterator[str]:
    """The server's backend store: SQLite, and PostgreSQL where its server can run here."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.db'}"
    else:
        with postgres_cluster() as uri:
            yield uri


@pytest.fixture
def tracking_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend_store: str) -> Iterator[dict]:
    """``mlflow server`` with the backend store above and proxied local artifacts on a free
    loopback port; the test process is pointed at it through ``MLFLOW_TRACKING_URI``, and no
    longer once the server stopped (monkeypatch's undo restores the environment and MLflow's
    active experiment)."""
    root = tmp_path / "server"
    root.mkdir()
    undo_mlflow_state_with(monkeypatch)
    with mlflow_server(root, backend_store, timeout_s=START_TIMEOUT_S) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        # The client side works in its own folder, so anything it wrote locally would show.
        client_dir = tmp_path / "client"
        client_dir.mkdir()
        monkeypatch.chdir(client_dir)
        try:
            yield {"uri": uri, "artifacts": root / "artifacts", "client_dir": client_dir}
        finally:
            if mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)  # unsets $MLFLOW_TRACKING_URI as well


def commit_project(root: Path) -> str:
    """Make ``root`` a git repository with one commit (the project the client registers from:
    its working directory is inside ``root``); returns that commit's hash."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    git = [
        "git",
        "-c", "user.name=fairtrain tests",
        "-c", "user.email=tests@example.invalid",
        "-c", "commit.gpgsign=false",
        "-c", "core.hooksPath=/dev/null",
    ]  # fmt: skip
    (root / "README.md").write_text("the project the registered models come from\n")
    for args in (["init", "-q"], ["add", "README.md"], ["commit", "-q", "-m", "project"]):
        subprocess.run([*git, *args], cwd=root, env=env, check=True, capture_output=True, timeout=60)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], cwd=root, env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", head), head
    return head


def gates_decision(result: dict) -> str:
    return "passed" if json.loads(result["outputs"]["gates"].read_text())["passed"] else "failed"


def test_two_registrations_through_a_tracking_server(tracking_server, lenient, prepared, tmp_path, adult_raw):
    uri = tracking_server["uri"]
    name = lenient.registry.model_name
    # The register stage reads the commit from its project root, the working directory here.
    head = commit_project(tmp_path)
    assert tracking_server["client_dir"].is_relative_to(tmp_path)

    first = run_after_training(lenient, prepared, tmp_path / "a", epochs=3)
    # Untrained: registered as challenger, it must not beat the champion.
    second = run_after_training(lenient, prepared, tmp_path / "b", epochs=0)
    assert first["ref"].tracking_uri == uri
    assert first["record"]["version"] == "1" and first["record"]["promoted"]
    assert second["record"]["version"] == "2" and not second["record"]["promoted"]

    # Everything below is read back over HTTP.
    client = mlflow.MlflowClient(tracking_uri=uri)
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert client.get_registered_model(name).aliases == {"champion": "1", "challenger": "2"}
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"

    for version, result in (("1", first), ("2", second)):
        tags = client.get_model_version(name, version).tags
        assert tags["git_commit"] == head
        assert tags["git_dirty"] == "false", "nothing tracked changed since the commit"
        assert tags["data_sha256"] == file_sha256(prepared["raw"])
        assert tags["params_sha256"] == json_sha256(lenient.model_dump(mode="json"))
        assert tags["mlflow_run_id"] == result["ref"].run_id
        assert client.get_model_version(name, version).run_id == result["ref"].run_id
        assert tags["gate_decision"] == gates_decision(result)
    assert client.get_model_version(name, "1").tags["gate_decision"] == "passed"
    assert client.get_model_version(name, "2").tags["promotion"].startswith("not promoted")

    # The run's test metrics went through the server.
    for result in (first, second):
        metrics = client.get_run(result["ref"].run_id).data.metrics
        evaluation = json.loads(result["outputs"]["evaluation"].read_text())
        assert metrics["test_roc_auc"] == pytest.approx(evaluation["roc_auc"])
        assert "fairness/sex/demographic_parity_difference" in metrics
    first_auc = client.get_run(first["ref"].run_id).data.metrics["test_roc_auc"]
    second_auc = client.get_run(second["ref"].run_id).data.metrics["test_roc_auc"]
    assert second_auc <= first_auc

    # Artifacts were proxied to the server's destination, not written beside the client.
    experiment_id = first["ref"].experiment_id
    assert client.get_experiment(experiment_id).artifact_location == f"mlflow-artifacts:/{experiment_id}"
    destination = tracking_server["artifacts"] / experiment_id
    for version in ("1", "2"):
        # Over REST the version's ``model_id`` comes back empty; its source names the model.
        source = client.get_model_version(name, version).source
        assert source.startswith("models:/m-"), source
        model_id = source.removeprefix("models:/")
        location = client.get_logged_model(model_id).artifact_location
        assert location == f"mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts"
        stored = destination / "models" / model_id / "artifacts"
        for relative in ("MLmodel", "artifacts/model/model.safetensors", "artifacts/preprocessor.json"):
            assert (stored / relative).is_file(), stored / relative
    for result in (first, second):
        stored = destination / result["ref"].run_id / "artifacts"
        assert (stored / "evaluation/evaluation.json").is_file(), sorted(stored.rglob("*"))
    assert not [p for p in tracking_server["client_dir"].rglob("*") if p.is_file()]

    # The champion loads and predicts raw rows through the server.
    rows = adult_raw.drop(columns=[lenient.dataset.label]).head(10).copy()
    for column in lenient.dataset.numeric_features:
        rows[column] = pd.to_numeric(rows[column])
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert model.metadata.run_id == first["ref"].run_id
    predictions = model.predict(rows)
    assert len(predictions) == 10
    assert predictions["probability"].between(0, 1).all()
    assert set(predictions["label"]) <= set(lenient.dataset.label_values)
