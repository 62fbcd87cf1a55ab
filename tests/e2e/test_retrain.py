"""The DVC remote and the retraining script as CI runs them: a trained project is pushed to
its default remote, cloned fresh, pulled, and ``scripts/retrain.sh`` runs in the clone on a batch
that did not drift (nothing retrains) and on one that did (retrains, pushes, commits, publishes
the card). Real git, DVC, Ray and an MLflow SQLite store standing in for the team server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.browser import chromium_available, inspect_page
from tests.e2e.test_dvc_repro import SAMPLE_ROWS, _run, _write_gz_csv, build_sample_repo
from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow
BATCH_ROWS = 2000
# Files whose bytes must survive push → fresh clone → pull unchanged.
PULLED = (
    "data/validated/dataset.parquet",
    "data/prepared/train.parquet",
    "data/prepared/preprocessor.json",
    "data/reference_stats.json",
    "models/model/model.safetensors",
    "models/checkpoint.ckpt",
)


def _git(root: Path, env: dict, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _remote_url(root: Path, env: dict) -> Path:
    """Where the default remote of .dvc/config resolves to for this checkout."""
    name = _run(["dvc", "config", "core.remote"], root, env).stdout.strip()
    url = _run(["dvc", "config", f"remote.{name}.url"], root, env).stdout.strip()
    return (root / ".dvc" / url).resolve()


@pytest.fixture(scope="module")
def batches(adult_raw, tmp_path_factory) -> dict[str, Path]:
    """Rows of Adult outside the repo's sample: as they come, and made to drift."""
    sampled = adult_raw.sample(n=SAMPLE_ROWS, random_state=0).index  # what adult_sample takes
    fresh = adult_raw.drop(index=sampled).sample(n=2 * BATCH_ROWS, random_state=1)
    folder = tmp_path_factory.mktemp("batches")
    steady, drifted = fresh.iloc[:BATCH_ROWS], fresh.iloc[BATCH_ROWS:].copy()
    drifted["age"] = (drifted["age"].astype(int) + 12).astype(str)
    drifted["hours-per-week"] = (drifted["hours-per-week"].astype(int) * 13 // 10).astype(str)
    paths = {"steady": folder / "steady.csv.gz", "drifted": folder / "drifted.csv.gz"}
    _write_gz_csv(steady, paths["steady"])
    _write_gz_csv(drifted, paths["drifted"])
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory, adult_raw) -> dict:
    """A trained sample project whose outputs are committed and pushed to its default remote,
    and a fresh clone of it (nothing pulled yet). Both sit in one folder, so the remote that
    .dvc/config names (a folder beside the project) is the same for both."""
    base = tmp_path_factory.mktemp("retrain")
    origin = base / "origin"
    origin.mkdir()
    env = build_sample_repo(origin, adult_raw, extra=("scripts",))
    # Retraining mechanics, not model quality: fewer bootstrap resamples and no baselines keep
    # each of the two pipeline runs short.
    params = yaml.safe_load((origin / "params.yaml").read_text())
    params["evaluate"].update(bootstrap_resamples=100, baselines=False)
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["dvc", "repro"], ["git", "add", "-A"], ["git", "commit", "-qm", "first run"]):
        done = _run(args, origin, env)
        assert done.returncode == 0, done.stderr[-3000:]
    pushed = _run(["dvc", "push"], origin, env)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], env=env, check=True)
    # The clone's own source is what runs in it; MLflow logs go to the "team" store.
    env = {**env, "PYTHONPATH": str(clone / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'team.db'}"}
    return {"base": base, "origin": origin, "clone": clone, "env": env, "remote": _remote_url(origin, env)}


def _retrain(project: dict, name: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = project["base"] / name
    env = {
        **project["env"],
        "GITHUB_STEP_SUMMARY": str(project["base"] / f"{name}-summary.md"),
        "GITHUB_OUTPUT": str(project["base"] / f"{name}-output.txt"),
    }
    done = _run(["scripts/retrain.sh", *args, "--out", str(out)], project["clone"], env, timeout=900)
    return done, out


@pytest.mark.parametrize("args", [["--batch"], ["--out"], ["--batch", "--force"]])
def test_an_option_without_its_value_is_bad_usage(args, tmp_path):
    """Exit 2 and the option's name, before anything is pulled or written (under `set -u` a
    missing value was bash's "$2: unbound variable", exit 1; `--batch --force` took "--force"
    for the batch)."""
    option = args[0]
    script = PROJECT_ROOT / "scripts/retrain.sh"
    done = subprocess.run(["bash", str(script), *args], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"retrain.sh: {option} needs a value (see --help)\n"
    assert list(tmp_path.iterdir()) == []


def test_default_remote_is_a_folder_beside_the_project(project):
    assert project["remote"] == project["base"] / "fairtrain-dvc-remote"
    stored = [p for p in (project["remote"] / "files/md5").rglob("*") if p.is_file()]
    assert len(stored) >= len(PULLED)


def test_fresh_clone_pulls_every_output_back(project):
    clone, origin, env = project["clone"], project["origin"], project["env"]
    assert not (clone / "models/model").exists() and not (clone / "data/prepared").exists()
    pulled = _run(["dvc", "pull"], clone, env)
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    for path in PULLED:
        assert (clone / path).read_bytes() == (origin / path).read_bytes(), path
    status = _run(["dvc", "status"], clone, env)
    assert "Data and pipelines are up to date." in status.stdout


def test_batch_without_drift_skips_retraining(project, batches):
    clone, env = project["clone"], project["env"]
    head, lock = _git(clone, env, "rev-parse", "HEAD"), (clone / "dvc.lock").read_text()
    done, out = _retrain(project, "steady", "--batch", str(batches["steady"]))
    assert done.returncode == 0, done.stderr[-3000:]
    decision = json.loads((out / "decision.json").read_text())
    assert decision["decision"] == "no_retrain" and decision["retrained"] is False
    assert decision["drift"] == "no_drift" and decision["drifted_checks"] == 0
    assert json.loads((out / "drift.json").read_text())["batch"]["rows"] == BATCH_ROWS
    assert "Running stage" not in done.stdout
    assert _git(clone, env, "rev-parse", "HEAD") == head
    assert (clone / "dvc.lock").read_text() == lock
    # The current card is still published, and CI gets the decision.
    assert (out / "model_card.md").read_text() == (clone / "reports/model_card.md").read_text()
    summary = (project["base"] / "steady-summary.md").read_text()
    assert "Retraining: no retrain" in summary
    # That card is the last trained model's, which need not be the champion.
    assert "Model card of the last model trained (its registry status is in the card)" in summary
    assert "decision=no_retrain" in (project["base"] / "steady-output.txt").read_text()
    assert not (project["base"] / "team.db").exists()  # nothing was logged


def test_drifted_batch_retrains_pushes_and_publishes(project, batches):
    clone, env = project["clone"], project["env"]
    head = _git(clone, env, "rev-parse", "HEAD")
    done, out = _retrain(project, "drifted", "--batch", str(batches["drifted"]))
    assert done.returncode == 0, done.stderr[-3000:]
    decision = json.loads((out / "decision.json").read_text())
    assert decision["decision"] == "retrain" and decision["retrained"] is True
    assert decision["drifted_checks"] >= 2 and "age" in decision["drift_reason"]
    assert "Running stage 'train'" in done.stdout

    # The batch became training data and the new lineage is committed.
    raw = pd.read_csv(clone / "data/raw/adult.csv.gz")
    assert len(raw) == SAMPLE_ROWS + BATCH_ROWS
    assert _git(clone, env, "rev-parse", "HEAD~1") == head
    assert "Retrain: the batch drifted" in _git(clone, env, "log", "-1", "--format=%s")
    assert _git(clone, env, "status", "--porcelain", "--untracked-files=no") == ""
    ledger = json.loads((clone / "data/raw/adult.csv.gz.batches.json").read_text())
    assert [(b["file"], b["rows"]) for b in ledger["batches"]] == [("drifted.csv.gz", BATCH_ROWS)]
    assert _git(clone, env, "ls-files", "data/raw/adult.csv.gz.batches.json") != "", "committed"

    # Logged to the "team" store: one run, with the card; the card published is this run's.
    run_id = json.loads((clone / "models/mlflow_run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert {a.path for a in client.list_artifacts(run_id, "model_card")} >= {"model_card/model_card.md"}
    assert {a.path for a in client.list_artifacts(run_id, "model_card")} >= {"model_card/model_card.html"}
    card = (out / "model_card.md").read_text()
    assert run_id in card and card == (clone / "reports/model_card.md").read_text()
    # ...and it tells the reviewer that the training data grew by this batch.
    total = SAMPLE_ROWS + BATCH_ROWS
    assert f"Appended batches: {BATCH_ROWS} of these {total} rows come from 1 labelled batch" in card
    assert f"| drifted.csv.gz | {BATCH_ROWS} |" in card
    # The HTML card as a reviewer opens it: every section filled, nothing loaded from outside.
    if chromium_available():
        page = inspect_page(out / "model_card.html")
        assert len(page["sections"]) >= 12 and all(s["body"] > 0 for s in page["sections"]), page
        assert page["external"] == []
    assert "decision=retrain" in (project["base"] / "drifted-output.txt").read_text()
    assert (out / "drift.html").read_text().count('class="drifted"') >= 2

    # Everything was pushed: another fresh clone pulls the new model.
    status = _run(["dvc", "status", "--cloud"], clone, env)
    assert "Cache and remote" in status.stdout and "are in sync" in status.stdout, status.stdout
    again = project["base"] / "again"  # beside the others: the same default remote
    subprocess.run(["git", "clone", "-q", str(clone), str(again)], env=env, check=True)
    pulled = _run(["dvc", "pull"], again, env)
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    weights = "models/model/model.safetensors"
    assert (again / weights).read_bytes() == (clone / weights).read_bytes()


def test_bad_batch_stops_before_anything_changes(project, batches, tmp_path):
    clone, env = project["clone"], project["env"]
    head = _git(clone, env, "rev-parse", "HEAD")
    bad = pd.read_csv(batches["steady"], dtype=str, keep_default_na=False).head(100)
    bad.loc[5, "age"] = "forty"
    _write_gz_csv(bad, tmp_path / "bad.csv.gz")
    done, _ = _retrain(project, "bad", "--batch", str(tmp_path / "bad.csv.gz"), "--force")
    assert done.returncode == 1
    assert "column 'age'" in done.stderr and "'forty'" in done.stderr
    assert _git(clone, env, "rev-parse", "HEAD") == head
    assert len(pd.read_csv(clone / "data/raw/adult.csv.gz")) == SAMPLE_ROWS + BATCH_ROWS


def test_a_forced_rerun_does_not_append_the_same_batch_again(project, batches):
    clone = project["clone"]
    before = (clone / "data/raw/adult.csv.gz").read_bytes()
    done, _ = _retrain(project, "again", "--batch", str(batches["drifted"]), "--force", "--no-push")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "this batch was already appended" in done.stdout + done.stderr
    assert (clone / "data/raw/adult.csv.gz").read_bytes() == before


def test_a_failed_retraining_puts_the_dataset_back(project, batches):
    """The batch is appended, then `dvc repro` fails (here: more Ray workers than CPUs): the
    raw data and its ledger are as before, so a rerun appends the batch once, not twice."""
    clone, env = project["clone"], project["env"]
    dataset, ledger = clone / "data/raw/adult.csv.gz", clone / "data/raw/adult.csv.gz.batches.json"
    before = dataset.read_bytes(), ledger.read_bytes()
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["train"]["num_workers"] = 64
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        done, _ = _retrain(project, "fails", "--batch", str(batches["steady"]), "--force", "--no-push")
    finally:
        _git(clone, env, "checkout", "--", "params.yaml")
    assert done.returncode == 1
    assert "dvc repro did not finish: data/raw/adult.csv.gz is back as it was" in done.stderr
    assert (dataset.read_bytes(), ledger.read_bytes()) == before
