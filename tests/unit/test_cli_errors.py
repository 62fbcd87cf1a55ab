"""`fairtrain` errors and usage that need no trained model: help text, where `--json` goes,
input paths that are not files, a tracking server that is down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fairtrain import tracking
from fairtrain.cli import main
from fairtrain.errors import TrackingError
from tests.helpers import PROJECT_ROOT

PARAMS = str(PROJECT_ROOT / "params.yaml")


@pytest.fixture
def cli(capsys):
    """Run `fairtrain ARGS...` in this process; returns (exit code, stdout, stderr), argparse's
    own exits (--help, bad usage) included."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as done:
            code = done.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_help_is_plain_text_without_rst_markup(cli):
    code, out, _ = cli("--help")
    assert code == 0
    assert "``" not in out
    assert "fairtrain: what users do with registered models outside dvc repro." in out
    assert "Every command takes --json (before or after it) for machine-readable output." in out


def test_json_goes_before_or_after_the_command(mlflow_store, cli):
    for args in (["--json", "versions"], ["versions", "--json"]):
        code, out, err = cli("--model-name", "nothing-yet", *args)
        assert (code, err) == (0, ""), args
        assert json.loads(out) == [], args
    code, out, _ = cli("--model-name", "nothing-yet", "versions")
    assert code == 0 and out.strip() == "model 'nothing-yet' has no versions"  # text without it


def test_a_server_that_is_down_gets_advice_for_the_cli_not_for_the_pipeline(
    closed_port_uri, cli, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refusal is final
    code, out, err = cli("--model-name", "m", "champion")
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"the MLflow tracking server at {closed_port_uri} is not usable" in err
    assert "run the command again" in err
    assert "dvc repro" not in err and "Outputs already written" not in err
    # The stages keep theirs: a rerun of `dvc repro` resumes where they stopped.
    with pytest.raises(TrackingError, match="rerun `dvc repro` and only the stages that did not finish"):
        tracking.configure_client()


@pytest.mark.parametrize("what", ["missing", "folder", "folder named like a CSV"])
def test_drift_names_its_batch_and_says_folder(tmp_path, cli, what):
    batch = {"missing": tmp_path / "nosuch.csv", "folder": tmp_path / "in"}.get(what, tmp_path / "b.csv")
    if what != "missing":
        batch.mkdir()
    code, out, err = cli("--params", PARAMS, "drift", "--batch", str(batch))
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"{batch}: " in err
    assert "params.yaml" not in err  # the path came from --batch, not from dataset.path
    if what == "missing":
        assert "file not found; expected a CSV or Parquet file" in err
    else:
        assert "is a folder, not a file" in err and "unsupported file type" not in err


@pytest.fixture
def dataset(tmp_path, raw_params, raw_rows, write_csv) -> tuple[Path, Path]:
    """A small CSV dataset and a params file whose dataset.path names it."""
    data = write_csv(raw_rows, name="dataset.csv")
    raw_params["dataset"]["path"] = str(data)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw_params))
    return params, data


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_append_batch_refuses_a_batch_that_is_not_a_file(tmp_path, dataset, cli, what):
    params, data = dataset
    before = data.read_bytes()
    batch = tmp_path / ("nosuch.csv" if what == "missing" else "batches.csv")
    if what == "folder":
        batch.mkdir()
    code, out, err = cli("--params", str(params), "append-batch", str(batch))
    assert code == 1 and out == "" and "Traceback" not in err
    expected = "file not found" if what == "missing" else "is a folder, not a file"
    assert f"{batch}: {expected}; expected a CSV or Parquet batch file" in err
    assert data.read_bytes() == before  # nothing changed on disk: no rows, no ledger
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dataset.csv", "params.yaml"] + (["batches.csv"] if what == "folder" else [])
    )
