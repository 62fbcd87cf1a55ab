"""Scale out with no code change: a real two-node Ray cluster on loopback.

A ``ray start --head`` and a second ``ray start --address`` node, one CPU each, run as
process groups this test owns (``--block``), so tearing them down stops exactly these
processes and never another user's cluster. The train stage runs unchanged with
``RAY_ADDRESS`` set and two workers, which Ray can only place one per node.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml

from fairtrain.training.callbacks import PAUSE_FILE, PROBE_DIR_ENV
from tests.helpers import PROJECT_ROOT
from tests.integration.pipeline import stop_when_paused

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _node(args: list[str], ports: list[int], temp_dir: str, log: Path, env: dict) -> subprocess.Popen:
    command = [
        RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
        "--temp-dir", temp_dir, "--disable-usage-stats",
        # Explicit free ports: the defaults (10001, 52365, ...) may belong to other clusters here.
        "--dashboard-agent-listen-port", str(ports[0]), "--dashboard-agent-grpc-port", str(ports[1]),
        "--runtime-env-agent-port", str(ports[2]), "--metrics-export-port", str(ports[3]),
        *args,
    ]  # fmt: skip
    return subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _stop(process: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM, then SIGKILL, this node's process group; then any process still naming our
    temp dir (Ray daemons that left the group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=15)
            break
        except subprocess.TimeoutExpired:
            continue
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in proc.info["cmdline"] or []):
            proc.kill()


@pytest.fixture
def two_node_cluster(tmp_path):
    # Unix socket paths are limited to ~100 bytes: Ray's temp dir must be short.
    temp_dir = tempfile.mkdtemp(prefix="ft-ray-", dir="/tmp")
    # All ports from one call, so that no two are the same: ports picked in separate calls
    # can repeat once the probing socket is closed, and Ray refuses a repeated port (seen in CI:
    # the dashboard's port was picked again for the head's agent).
    port, dashboard, client, *agents = _free_ports(11)
    # Worker processes inherit the environment of the node they run on, so the probe folder
    # (where each worker writes its rank and node id) is set on the nodes.
    probe = tmp_path / "probe"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", PROBE_DIR_ENV: str(probe)}
    env.pop("RAY_ADDRESS", None)
    nodes = []
    try:
        nodes.append(
            _node(
                [
                    "--head", "--port", str(port), "--include-dashboard", "true",
                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                    "--ray-client-server-port", str(client),
                ],
                agents[:4], temp_dir, tmp_path / "head.log", env,
            )
        )  # fmt: skip
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True).returncode:
            assert nodes[0].poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the head node did not come up"
            time.sleep(1)
        nodes.append(_node(["--address", address], agents[4:], temp_dir, tmp_path / "worker.log", env))
        deadline = time.monotonic() + 90
        while True:
            status = subprocess.run(
                [RAY, "status", "--address", address], env=env, capture_output=True, text=True
            )
            if "/2.0 CPU" in status.stdout:
                break
            assert nodes[1].poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"the second node did not join:\n{status.stdout}"
            time.sleep(1)
        yield {"address": address, "env": env, "probe": probe}
    finally:
        for node in reversed(nodes):
            _stop(node, temp_dir)


def test_training_joins_a_two_node_cluster_and_places_one_worker_per_node(
    two_node_cluster, prepared, small_params, tmp_path
):
    probe = two_node_cluster["probe"]
    params_file = tmp_path / "params.yaml"
    raw = small_params.model_dump(mode="json", by_alias=True)
    raw["train"].update(num_workers=2, max_epochs=2)
    params_file.write_text(yaml.safe_dump(raw))
    env = {
        **two_node_cluster["env"],
        "RAY_ADDRESS": two_node_cluster["address"],
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)]),
    }
    command = [
        sys.executable, str(PROJECT_ROOT / "pipelines/train.py"), "--params", str(params_file),
        "--train", str(prepared["train"]), "--val", str(prepared["val"]),
        "--preprocessor", str(prepared["preprocessor"]), "--model-dir", str(tmp_path / "models"),
        "--run-ref", str(tmp_path / "models/mlflow_run.json"),
        "--metrics", str(tmp_path / "metrics/train.json"), "--history", str(tmp_path / "plots/h.json"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "joining Ray cluster" in result.stderr
    probes = [json.loads(p.read_text()) for p in probe.glob("worker-*.json")]
    assert sorted(p["rank"] for p in probes) == [0, 1]
    assert len({p["node_id"] for p in probes}) == 2, "the two workers ran on two different nodes"
    assert json.loads((tmp_path / "metrics/train.json").read_text())["epochs_run"] == 2

    # Stopped with SIGTERM (what `dvc repro` sends on Ctrl-C) while training on the cluster, the
    # stage ends its run KILLED, as with a local instance: joining a cluster must not leave
    # Ray's own SIGTERM handler (sys.exit, which would mark the run FAILED) in place.
    (probe / PAUSE_FILE).write_text("0")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    stage = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True, **quiet)
    assert stop_when_paused(stage, probe) == 130
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("fairtrain").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
