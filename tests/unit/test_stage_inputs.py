"""The train stage and the search before Ray starts: their input files checked first, and a
training run recorded for resuming only once it carries its metadata (real files, a real
SQLite MLflow store; everything here fails before Ray would start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fairtrain.data.preprocessing import fit_preprocessor
from fairtrain.errors import FairtrainError
from fairtrain.io import write_json
from fairtrain.stages.train_stage import STORAGE_DIR, train_stage
from fairtrain.stages.tune_stage import tune_stage
from tests.helpers import PROJECT_ROOT, shrink_params


@pytest.fixture(autouse=True)
def no_local_ray(monkeypatch):
    """Everything here fails before Ray; should it not, joining this address fails at once
    instead of starting a local Ray instance."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")


@pytest.fixture
def inputs(tmp_path, params, cleaned_train) -> dict[str, Path]:
    folder = tmp_path / "inputs"
    folder.mkdir()
    paths = {
        "train": folder / "train.parquet",
        "val": folder / "val.parquet",
        "preprocessor": folder / "preprocessor.json",
    }
    cleaned_train.to_parquet(paths["train"], index=False)
    cleaned_train.to_parquet(paths["val"], index=False)
    preprocessor = fit_preprocessor(cleaned_train, params.dataset, params.prepare)
    write_json(paths["preprocessor"], preprocessor.to_dict())
    return paths


@pytest.fixture
def searched(params):
    return shrink_params(params, tune={"space": {"learning_rate": [0.01, 0.001]}})


def _train(params, paths, tmp_path):
    out = tmp_path / "out"
    return train_stage(
        params,
        paths["train"],
        paths["val"],
        paths["preprocessor"],
        out / "models",
        out / "run.json",
        out / "metrics.json",
        out / "history.json",
    )


def test_a_missing_split_names_the_file_and_the_stage_that_writes_it(searched, inputs, tmp_path):
    missing = tmp_path / "data/augmented/train.parquet"
    with pytest.raises(FairtrainError, match=rf"tune: the training split {missing} does not exist") as error:
        tune_stage(searched, missing, inputs["val"], inputs["preprocessor"])
    assert "`dvc repro augment`" in str(error.value)

    with pytest.raises(FairtrainError, match=r"train: the validation split .* does not exist.*repro prepare"):
        _train(searched, {**inputs, "val": tmp_path / "nowhere.parquet"}, tmp_path)


def test_an_unreadable_preprocessor_or_split_is_named(searched, inputs, tmp_path):
    inputs["preprocessor"].write_text('{"format_version": 1, "numeric": {')  # cut short
    with pytest.raises(FairtrainError, match=r"tune: the fitted preprocessor .* not a readable preprocessor"):
        tune_stage(searched, inputs["train"], inputs["val"], inputs["preprocessor"])

    inputs["preprocessor"].write_text("{}")
    with pytest.raises(FairtrainError, match=r"train: the fitted preprocessor .*format_version.*prepare"):
        _train(searched, inputs, tmp_path)


def test_a_truncated_split_is_named(searched, inputs, tmp_path):
    data = inputs["val"].read_bytes()
    inputs["val"].write_bytes(data[: len(data) // 2])
    with pytest.raises(FairtrainError, match=r"the validation split .* is not a readable Parquet file"):
        tune_stage(searched, inputs["train"], inputs["val"], inputs["preprocessor"])


def test_the_tune_script_reports_a_missing_split_without_a_traceback(searched, inputs, tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((PROJECT_ROOT / "params.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT)])}
    result = subprocess.run(
        [
            sys.executable, str(PROJECT_ROOT / "pipelines/tune.py"), "--params", str(params_file),
            "--train", "missing.parquet", "--val", str(inputs["val"]),
            "--preprocessor", str(inputs["preprocessor"]),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "fairtrain tune: error: tune: the training split missing.parquet does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_whose_metadata_failed_is_not_recorded_for_resuming(
    params, inputs, cleaned_train, tmp_path, mlflow_store
):
    """A failure while the new run's params, tags and dataset inputs are logged must leave no
    resume record: the rerun would reopen that run and skip its metadata for good. Here MLflow
    refuses the training split as a dataset input (its schema, with a column name of 1.1 M
    characters that the model does not read, is over MLflow's 1 MB limit)."""
    cleaned_train.assign(**{"n" * 1_100_000: "x"}).to_parquet(inputs["train"], index=False)
    with pytest.raises(MlflowException, match="'schema' exceeds the maximum length"):
        _train(params, inputs, tmp_path)

    storage = tmp_path / "out/models" / STORAGE_DIR
    assert list(storage.glob("fairtrain-train-*.json")) == [], "no resume record"
    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name(params.tracking.experiment).experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.params["train.learning_rate"] == "0.01"
    assert "fairtrain.stage" not in run.data.tags, "the stage tag marks complete metadata"
