"""A data set declared only in params.yaml, under DVC: the shipped loans example's params copied
over params.yaml in a fresh git + DVC repo, then `dvc repro augment` (validate → prepare →
augment), then a bad file that must stop at validate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow
COPIED = ("dvc.yaml", ".dvcignore", ".dvc/config", "pipelines", "src", "data/raw/loans.csv.gz")


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    sys.stdout.write(done.stdout[-3000:])
    sys.stderr.write(done.stderr[-3000:])
    return done


def test_loans_declared_in_params_only_run_under_dvc(tmp_path):
    root = tmp_path / "repo"
    for name in COPIED:
        source = PROJECT_ROOT / name
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target)
    params = yaml.safe_load((PROJECT_ROOT / "examples/loans/params.yaml").read_text())
    params["augment"].update(group_balance="label_rate", group_feature="applicant_age")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(root / "src")
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "loans"],
    ):
        subprocess.run(args, cwd=root, env=env, check=True)

    done = _run(["dvc", "repro", "augment"], root, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((root / "metrics/validation.json").read_text())["status"] == "passed"
    assert "rows match the declared schema" in (root / "metrics/validation.txt").read_text()
    test = pd.read_parquet(root / "data/prepared/test.parquet")
    assert "applicant_age_group" in test.columns and test["applicant_age_group"].notna().all()
    augment = json.loads((root / "metrics/augment.json").read_text())
    assert augment["rows_after"] > augment["rows_before"] and augment["method"].startswith("group_balance")
    shown = _run(["dvc", "metrics", "show", "--json"], root, env)
    assert "rows_by_group_and_label" in shown.stdout

    # A file with an unknown category and an out-of-range age stops at validate.
    bad = pd.read_csv(root / "data/raw/loans.csv.gz", dtype=str, keep_default_na=False)
    bad.loc[4, "gender"] = "unknown-gender"
    bad.loc[9, "applicant_age"] = "130"
    bad.to_csv(root / "data/raw/loans.csv.gz", index=False, compression="gzip")
    done = _run(["dvc", "repro", "augment"], root, env)
    assert done.returncode != 0
    assert "unknown-gender" in done.stderr and "'130' (line 11)" in done.stderr
    assert "Running stage 'prepare'" not in done.stdout
