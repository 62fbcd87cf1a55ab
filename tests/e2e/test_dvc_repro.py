"""The whole pipeline as users run it: `dvc repro` in a fresh git + DVC repo on a sample of
Adult, then the checks a new user would make. Real DVC, real Ray, real MLflow store."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.helpers import PROJECT_ROOT, adult_sample, undo_mlflow_state_with

pytestmark = pytest.mark.slow
SAMPLE_ROWS = 5000
COPIED = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/plots", "pipelines", "src")


def _run(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(done.stdout[-4000:])
    sys.stderr.write(done.stderr[-4000:])
    return done


def _write_gz_csv(frame: pd.DataFrame, path: Path) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, index=False)


def build_sample_repo(root: Path, adult_raw: pd.DataFrame, extra: tuple[str, ...] = ()) -> dict:
    """A copy of the project (plus ``extra`` paths) in ``root`` with a 5,000-row sample, shrunk
    params and its own git history; returns the environment to run its commands in."""
    for name in COPIED + extra:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    (root / "data/raw").mkdir(parents=True)
    _write_gz_csv(adult_sample(adult_raw, SAMPLE_ROWS), root / "data/raw/adult.csv.gz")

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(max_epochs=3)
    params["evaluate"].update(attribution_samples=200, ig_steps=20, min_group_size=20)
    # The e2e test checks the pipeline's mechanics; on a 5,000-row sample the race groups have
    # 20-40 test rows, so disparity gates would pass or fail on noise.
    params["evaluate"]["gates"].update(
        min_roc_auc=0.8,
        max_demographic_parity_difference=1.0,
        max_equalized_odds_difference=1.0,
        # Three epochs on oversampled rows leave the probabilities far from calibrated.
        max_expected_calibration_error=1.0,
    )
    # The bad-input test feeds a 300-row file: its rare race groups would add "too small to
    # audit" errors to the two it checks for.
    params["validate"].update(min_group_rows=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("mlflow.db\nmlruns/\n")

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "sample"],
    ):
        subprocess.run(args, cwd=root, env=env, check=True)
    return env


@pytest.fixture(scope="module")
def repo(tmp_path_factory, adult_raw) -> tuple[Path, dict]:
    """A copy of the project with a 5,000-row sample, shrunk params, and its own git history."""
    root = tmp_path_factory.mktemp("repo")
    env = build_sample_repo(root, adult_raw)
    first = _run(["dvc", "repro"], root, env)
    assert first.returncode == 0, first.stderr[-3000:]
    _console(root).write_text(first.stdout + first.stderr)
    return root, env


def _console(root: Path) -> Path:
    """Where the repo fixture keeps the first `dvc repro`'s console output (beside the repo)."""
    return root.with_name(f"{root.name}-console.txt")


def _uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def _client(root: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(_uri(root))


@contextmanager
def _tracking(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow's fluent API (``models:/`` URIs) on the repo's store, for the ``with`` block:
    then the tracking URI is reset, and ``monkeypatch``'s undo restores the environment
    (``mlflow.set_tracking_uri`` exports the URI as $MLFLOW_TRACKING_URI) and the rest of
    MLflow's process-wide state."""
    undo_mlflow_state_with(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _uri(root))
    mlflow.set_tracking_uri(_uri(root))
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def test_repro_records_one_complete_run_and_a_servable_model(repo, monkeypatch):
    root, _ = repo
    client = _client(root)
    evaluation = json.loads((root / "metrics/evaluation.json").read_text())
    train = json.loads((root / "metrics/train.json").read_text())
    registered = json.loads((root / "models/registered.json").read_text())
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]

    experiment = client.get_experiment_by_name("fairtrain")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_epochs"] == "3"
    assert len(client.get_metric_history(run_id, "val_loss")) == train["epochs_run"]
    assert run.data.metrics["test_roc_auc"] == pytest.approx(evaluation["roc_auc"])
    assert "fairness/sex/demographic_parity_difference" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run_id)} >= {"evaluation", "model_card", "training"}
    assert evaluation["roc_auc"] > 0.85

    # The registered version carries its lineage back to this repo's commit and data.
    version = client.get_model_version_by_alias("fairtrain-adult", "challenger")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    assert version.tags["git_commit"] == head
    assert version.tags["mlflow_run_id"] == run_id
    assert str(version.version) == registered["version"]
    assert "champion" in registered["aliases"]

    # The model loads by alias and predicts on rows of the raw CSV.
    raw = pd.read_csv(root / "data/raw/adult.csv.gz").head(50)
    with _tracking(root, monkeypatch):
        model = mlflow.pyfunc.load_model("models:/fairtrain-adult@challenger")
    predicted = model.predict(raw.drop(columns=["income-per-year"]))
    assert len(predicted) == 50
    assert predicted["probability"].between(0, 1).all()

    # The model card quotes the recorded figures, with no template leftovers.
    card = (root / "reports/model_card.md").read_text()
    assert f"| ROC-AUC | {evaluation['roc_auc']:.4f} |" in card
    assert f"version {registered['version']}" in card
    assert "{{" not in card and "None" not in card


def test_training_progress_is_readable_on_the_console(repo):
    root, _ = repo
    console = _console(root).read_text()
    # Where the workers train, then one line per epoch from rank 0 (Ray forwards worker logs).
    assert re.search(r"training on 2 worker\(s\), rank 0 on cpu, process group gloo", console)
    assert re.search(r"epoch 1/3 train_loss=\S+ val_loss=\S+ val_auc=\S+ \([\d,]+ samples/s\)", console)
    # Ray Train's own per-epoch INFO lines are kept out of it.
    assert "Reporting training result" not in console
    assert "Checkpoint successfully created" not in console
    # Nor Lightning's tip for its hosted logger and its own FutureWarning under recent torch.
    assert "litlogger" not in console
    assert "LeafSpec" not in console


def test_second_repro_reruns_nothing(repo):
    root, env = repo
    again = _run(["dvc", "repro"], root, env)
    assert again.returncode == 0
    assert "Data and pipelines are up to date." in again.stdout
    assert "Running stage" not in again.stdout


def test_dvc_plots_show_renders_every_plot_and_the_figures_are_indexed(repo, tmp_path):
    root, env = repo
    done = _run(["dvc", "plots", "show", "-o", str(tmp_path / "html")], root, env)
    assert done.returncode == 0, done.stderr[-3000:]
    html = (tmp_path / "html/index.html").read_text()
    for plot in (
        "plots/roc.json",
        "plots/calibration.json",
        "plots/confusion.json",
        "plots/roc_groups.json",
        "plots/pr_groups.json",
        "plots/group_metrics.json",
        "plots/attribution_bars.json",
    ):
        assert plot in html, plot
    for title in ("ROC per group", "Precision-recall per group", "Metrics per group", "Feature importance"):
        assert title in html, title
    # The per-group templates got their data: curves and bars per group, with intervals.
    assert '"curve": "sex=Female"' in html or '"curve":"sex=Female"' in html
    assert '"lower"' in html and "<DVC_METRIC" not in html

    figures = root / "plots/figures"
    index = json.loads((figures / "index.json").read_text())
    assert {entry["file"] for entry in index} == {p.name for p in figures.glob("*.png")}
    assert {entry["section"] for entry in index} == {"metrics", "quantitative_analyses", "model_examination"}


def test_experiment_with_one_param_reruns_only_its_dependants(repo):
    root, env = repo
    client = _client(root)
    versions_before = len(client.search_model_versions("name = 'fairtrain-adult'"))
    done = _run(["dvc", "exp", "run", "-S", "evaluate.ig_steps=10"], root, env)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("validate", "prepare", "augment", "train"):
        assert f"Stage '{stage}' didn't change, skipping" in done.stdout
    for stage in ("evaluate", "register", "report"):
        assert f"Running stage '{stage}'" in done.stdout
    assert json.loads((root / "metrics/attributions.json").read_text())["n_steps"] == 10
    # Same run, same model files: register reuses the version instead of adding one.
    assert len(client.search_model_versions("name = 'fairtrain-adult'")) == versions_before

    # The README's focused comparison shows its columns with figures, not "…".
    (command,) = [
        line.split("  #")[0]
        for line in (PROJECT_ROOT / "README.md").read_text().splitlines()
        if line.startswith("dvc exp show --drop")
    ]
    shown = _run([*shlex.split(command), "--csv"], root, env)
    assert shown.returncode == 0, shown.stderr[-3000:]
    header, *rows = list(csv.reader(shown.stdout.splitlines()))
    assert header == [
        "Experiment",
        "roc_auc",
        "accuracy",
        "ece",
        "disparities.sex.demographic_parity_difference",
        "train.max_epochs",
        "train.learning_rate",
    ]
    workspace = rows[0]
    evaluation = json.loads((root / "metrics/evaluation.json").read_text())
    assert float(workspace[1]) == pytest.approx(evaluation["roc_auc"])
    assert float(workspace[4]) == pytest.approx(
        evaluation["disparities"]["sex"]["demographic_parity_difference"]
    )


def test_a_misspelt_param_is_refused_and_every_output_is_kept(repo):
    """DVC checks a stage's declared params only after deleting its non-persistent outputs:
    before every output was `persist: true`, this left the workspace without
    metrics/train.json and plots/train_history.json (uncached, so `dvc checkout` could not
    bring them back either)."""
    root, env = repo
    params_file = root / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["train"]["lerning_rate"] = params["train"].pop("learning_rate")
    outputs = [
        path
        for folder in ("metrics", "plots", "models", "reports")
        for path in (root / folder).rglob("*")
        if path.is_file()
    ]
    assert root / "metrics/train.json" in outputs and root / "reports/model_card.md" in outputs
    before = {path: path.read_bytes() for path in outputs}
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        done = _run(["dvc", "repro"], root, env)
    finally:
        params_file.write_text(original)
    assert done.returncode != 0
    assert "train.learning_rate" in done.stderr and "missing" in done.stderr
    assert {path: path.read_bytes() for path in outputs if path.exists()} == before


def test_bad_input_stops_at_validate_and_keeps_earlier_results(repo, adult_raw):
    root, env = repo
    client = _client(root)
    champion = client.get_model_version_by_alias("fairtrain-adult", "champion").version
    card_before = (root / "reports/model_card.md").read_text()
    validated_before = (root / "data/validated/dataset.parquet").read_bytes()

    broken = adult_sample(adult_raw, 300)
    broken.loc[3, "age"] = "abc"
    broken.loc[7, "income-per-year"] = "maybe"
    _write_gz_csv(broken, root / "data/raw/adult.csv.gz")
    done = _run(["dvc", "repro"], root, env)

    assert done.returncode != 0
    message = done.stderr
    assert "column 'age'" in message and "'abc' (line 5)" in message
    assert "'maybe'" in message and "label_values" in message
    report = json.loads((root / "metrics/validation.json").read_text())
    assert report["status"] == "failed" and report["error_count"] == 2
    assert "Running stage 'prepare'" not in done.stdout
    # The rejected file replaced nothing: the last good validated table is still in the
    # workspace, nothing downstream was rewritten and the champion did not move.
    assert (root / "data/validated/dataset.parquet").read_bytes() == validated_before
    assert (root / "reports/model_card.md").read_text() == card_before
    assert client.get_model_version_by_alias("fairtrain-adult", "champion").version == champion
