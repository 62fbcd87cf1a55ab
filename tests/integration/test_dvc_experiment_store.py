"""A DVC experiment run outside the workspace (`dvc exp run --queue` / `--temp`) runs in a
copy of the repository under .dvc/tmp/exps/, deleted when it ends. The default MLflow store
must be the project's own mlflow.db, not one inside that copy: the experiment's runs,
registered versions and model card would be deleted with it, and its evaluate would not see
the registry's champion. Real git and DVC; the stage records the URI the pipeline resolves."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairtrain.tracking import TRACKING_URI_ENV, default_store_root, resolve_tracking_uri

STAGE = """\
stages:
  where:
    cmd: python where.py
    params:
      - x
    outs:
      - uri.txt:
          cache: false
"""
# What the stages do first: resolve the store, then create (or find) their experiment.
WHERE = """\
import mlflow
from fairtrain.tracking import configure, resolve_tracking_uri
uri = resolve_tracking_uri()
configure("made-in-a-copy", uri)
location = mlflow.get_experiment_by_name("made-in-a-copy").artifact_location
open("uri.txt", "w").write(uri + "\\n" + location)
"""


def _git(root: Path, *args: str, env: dict) -> str:
    done = subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True)
    return done.stdout


def _experiment_refs(root: Path, env: dict, wait: float) -> list[str]:
    """The experiments' git refs; a queued one appears when its background worker is done."""
    deadline = time.monotonic() + wait
    while True:
        refs = _git(root, "for-each-ref", "--format=%(refname)", "refs/exps", env=env).split()
        if refs or time.monotonic() > deadline:
            return refs
        time.sleep(0.5)


@pytest.mark.parametrize("how", ["--temp", "--queue"])
def test_an_experiment_outside_the_workspace_uses_the_projects_store(tmp_path, how):
    root = tmp_path / "project"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if k != TRACKING_URI_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    _git(root, "init", "-q", "-b", "main", env=env)
    subprocess.run(["dvc", "init", "-q"], cwd=root, env=env, check=True)
    (root / "dvc.yaml").write_text(STAGE)
    (root / "params.yaml").write_text("x: 1\n")
    (root / "where.py").write_text(WHERE)
    _git(root, "add", "-A", env=env)
    _git(root, "commit", "-qm", "project", env=env)

    run = ["dvc", "exp", "run", how, "-S", "x=2", "-n", "elsewhere"]
    commands = [run] if how == "--temp" else [run, ["dvc", "queue", "start", "-j", "1"]]
    for command in commands:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    refs = _experiment_refs(root, env, wait=180 if how == "--queue" else 0)
    assert len(refs) == 1, refs
    uri, artifacts = _git(root, "show", f"{refs[0]}:uri.txt", env=env).splitlines()
    assert uri == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    # The experiment was first made in the copy: its artifacts (logged models) must not be.
    assert Path(artifacts.removeprefix("file://")).is_relative_to(root.resolve() / "mlruns"), artifacts


def test_the_default_store_root_of_an_experiment_copy_is_its_project(tmp_path, monkeypatch):
    # mlflow.set_tracking_uri also sets the variable: an earlier test's store may be in it.
    monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    project = tmp_path / "project"
    assert default_store_root(project / ".dvc/tmp/exps/tmpab12cd") == project.resolve()
    assert default_store_root(project / ".dvc/tmp/exps/standalone/tmpab12cd/pipelines") == project.resolve()
    assert default_store_root(project) == project.resolve()
    assert default_store_root(project / ".dvc/tmp") == (project / ".dvc/tmp").resolve()
    assert resolve_tracking_uri(project) == f"sqlite:///{project.resolve() / 'mlflow.db'}"
