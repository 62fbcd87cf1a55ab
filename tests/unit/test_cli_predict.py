"""`fairtrain predict`: rows read as the pipeline reads them, clear errors about --output.

The model is a real MLflow pyfunc saved to a folder (fitted preprocessing, an untrained
network, fairtrain's serving code), so no registry is needed: `--model` takes its path.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

import fairtrain
from fairtrain.cli import main
from fairtrain.data.loading import read_raw_table
from fairtrain.data.preprocessing import fit_preprocessor
from fairtrain.data.validation import clean_table
from fairtrain.evaluation.champion import serving_rows
from fairtrain.io import write_json
from fairtrain.models.export import model_from_architecture, save_model
from fairtrain.registry.pyfunc_model import MODEL_DIR, PREPROCESSOR, SERVING, FairtrainModel
from fairtrain.registry.register import MODEL_CODE, raw_rows_signature
from tests.helpers import PROJECT_ROOT, adult_sample


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, adult_raw, project_params) -> dict[str, str]:
    schema = project_params.dataset
    folder = tmp_path_factory.mktemp("served")
    preprocessor = fit_preprocessor(
        clean_table(adult_sample(adult_raw, 2000), schema), schema, project_params.prepare
    )
    architecture = {"n_features": preprocessor.n_features, "hidden_sizes": [8]}
    torch.manual_seed(0)
    save_model(folder / "model", model_from_architecture(architecture).state_dict(), architecture)
    write_json(folder / "preprocessor.json", preprocessor.to_dict())
    write_json(
        folder / "serving.json",
        {"threshold": 0.5, "positive_class": schema.positive_class, "negative_class": schema.negative_class},
    )
    return {
        MODEL_DIR: str(folder / "model"),
        PREPROCESSOR: str(folder / "preprocessor.json"),
        SERVING: str(folder / "serving.json"),
    }


@pytest.fixture(scope="module")
def model_path(artifacts, tmp_path_factory, adult_raw, project_params) -> Path:
    """The pyfunc as the register stage logs it (models from code, fairtrain packaged, a
    signature of the raw feature columns: fnlwgt and the label are not among them)."""
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    local = FairtrainModel()
    local.load(artifacts)
    schema = project_params.dataset
    example = serving_rows(clean_table(adult_sample(adult_raw, 5), schema), schema)
    mlflow.pyfunc.save_model(
        str(path),
        python_model=str(MODEL_CODE),
        artifacts=artifacts,
        code_paths=[str(Path(fairtrain.__file__).parent)],
        signature=raw_rows_signature(example, local.predict(None, example)),
    )
    return path


@pytest.fixture(scope="module")
def served(artifacts) -> FairtrainModel:
    """The same model in this process, for the expected scores."""
    model = FairtrainModel()
    model.load(artifacts)
    return model


@pytest.fixture
def predict(model_path, mlflow_store, capsys):
    """Run `fairtrain predict ... --model <the saved pyfunc>` (the CLI still opens a tracking
    store: a fresh one); returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(
            ["--params", str(PROJECT_ROOT / "params.yaml"), "predict", *args, "--model", str(model_path)]
        )
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_predict_scores_text_like_na_as_the_pipeline_reads_it(tmp_path, adult_raw, served, predict):
    """ "NA" is an occupation to the pipeline (read with keep_default_na=False); plain
    pd.read_csv made it NaN, so the same row scored differently through predict."""
    rows = adult_sample(adult_raw, 5, seed=3).drop(columns=["income-per-year"])
    rows.loc[1, "occupation"] = "NA"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    pipeline = served.predict(None, read_raw_table(tmp_path / "rows.csv"))
    as_nan = served.predict(None, rows.replace({"occupation": {"NA": np.nan}}))
    assert pipeline.loc[1, "probability"] != pytest.approx(as_nan.loc[1, "probability"])  # it matters

    code, out, err = predict(str(tmp_path / "rows.csv"), "--json", "--output", str(tmp_path / "scored.csv"))
    assert code == 0, err
    printed = pd.DataFrame(json.loads(out))  # to_json keeps 10 digits
    np.testing.assert_allclose(printed["probability"], pipeline["probability"], rtol=0, atol=1e-9)
    written = read_raw_table(tmp_path / "scored.csv")
    np.testing.assert_array_equal(written["probability"].astype(float), pipeline["probability"])
    assert written.loc[1, "occupation"] == "NA"  # the rows go out as they came in


def test_predict_output_creates_missing_folders_as_drift_reports_do(tmp_path, adult_raw, predict):
    rows = adult_sample(adult_raw, 3).drop(columns=["income-per-year"])
    rows.to_csv(tmp_path / "rows.csv", index=False)
    target = tmp_path / "scored" / "2026-11" / "rows.csv"
    code, _, err = predict(str(tmp_path / "rows.csv"), "--output", str(target))
    assert code == 0, err
    assert len(read_raw_table(target)) == 3


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_predict_output_that_cannot_be_a_file_is_refused_before_scoring(tmp_path, adult_raw, predict, where):
    rows = adult_sample(adult_raw, 3).drop(columns=["income-per-year"])
    rows.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "notes.txt").write_text("a file\n")
    (tmp_path / "out").mkdir()
    target = tmp_path / "notes.txt" / "scored.csv" if where == "under a file" else tmp_path / "out"
    code, _, err = predict(str(tmp_path / "rows.csv"), "--output", str(target))
    assert code == 1 and "Traceback" not in err
    assert f"--output {target}" in err
    assert ("notes.txt is a file, not a folder" if where == "under a file" else "is a folder") in err
    assert "rows scored" not in err  # refused before the model was loaded
    assert (tmp_path / "notes.txt").read_text() == "a file\n"


def test_predict_output_keeps_an_earlier_file_when_writing_fails(tmp_path, adult_raw, predict, monkeypatch):
    rows = adult_sample(adult_raw, 3).drop(columns=["income-per-year"])
    rows.to_csv(tmp_path / "rows.csv", index=False)
    target = tmp_path / "scored.csv"
    target.write_text("earlier result\n")

    def disk_full(self, path, *args, **kwargs):
        with open(path, "w") as handle:
            handle.write("half a fi")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    code, _, err = predict(str(tmp_path / "rows.csv"), "--output", str(target))
    assert code == 1 and str(target) in err and "No space left" in err
    assert target.read_text() == "earlier result\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_predict_names_a_missing_input_file(tmp_path, predict):
    code, _, err = predict(str(tmp_path / "absent.csv"))
    assert code == 1 and "absent.csv" in err and "file not found" in err


def test_predict_says_an_input_folder_is_a_folder(tmp_path, predict):
    (tmp_path / "rows.csv").mkdir()
    code, _, err = predict(str(tmp_path / "rows.csv"))
    assert code == 1 and f"{tmp_path / 'rows.csv'}: is a folder, not a file" in err
    assert "file not found" not in err


@pytest.fixture
def adult_rows(adult_raw) -> pd.DataFrame:
    """Raw rows as users send them: every column of the data file (fnlwgt, which the model
    does not use, included) but the label."""
    return adult_sample(adult_raw, 8, seed=5).drop(columns=["income-per-year"])


def test_predict_names_the_file_and_the_missing_columns_only(tmp_path, adult_rows, predict):
    """MLflow's own schema error was cut to its last line, started with the rows' repr and
    called fnlwgt, which raw rows are meant to carry, an "extra" input."""
    adult_rows.drop(columns=["race", "sex"]).to_csv(tmp_path / "rows.csv", index=False)
    code, out, err = predict(str(tmp_path / "rows.csv"), "--output", str(tmp_path / "scored.csv"))
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"{tmp_path / 'rows.csv'}: missing column(s) ['race', 'sex'] that the model needs" in err
    assert "it expects: age, workclass, education," in err
    assert "extra" not in err and "schema" not in err and "rows x" not in err
    assert not (tmp_path / "scored.csv").exists()


def test_predict_names_the_file_and_the_values_that_do_not_fit(tmp_path, adult_rows, predict):
    adult_rows.loc[[2, 5], "age"] = "forty"
    adult_rows.to_csv(tmp_path / "rows.csv", index=False)
    code, _, err = predict(str(tmp_path / "rows.csv"))
    assert code == 1 and "Traceback" not in err
    assert f"{tmp_path / 'rows.csv'}: column 'age': 2 value(s) are not finite numbers" in err
    assert "['forty']" in err
    assert "MlflowException" not in err and "mlflow.exceptions" not in err


def test_predict_refuses_a_file_with_a_header_only(tmp_path, adult_rows, predict):
    adult_rows.head(0).to_csv(tmp_path / "rows.csv", index=False)
    code, out, err = predict(str(tmp_path / "rows.csv"), "--output", str(tmp_path / "scored.csv"))
    assert (code, out) == (1, "")
    assert f"{tmp_path / 'rows.csv'}: the file has no rows, only column names" in err
    assert not (tmp_path / "scored.csv").exists()


@pytest.mark.parametrize("names", [["label"], ["probability", "label"]])
def test_predict_refuses_input_columns_named_like_its_outputs(tmp_path, adult_rows, predict, names):
    """The scored CSV had `label` (or `probability`) twice: which one is the model's?"""
    for name in names:
        adult_rows[name] = "from the input"
    adult_rows.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "scored.csv").write_text("earlier result\n")
    clashing = [name for name in ("probability", "label") if name in names]  # in the model's order
    for output in (["--output", str(tmp_path / "scored.csv")], []):  # a file, or stdout
        code, out, err = predict(str(tmp_path / "rows.csv"), *output)
        assert (code, out) == (1, "")
        assert f"{tmp_path / 'rows.csv'}: has column(s) {clashing}, which predict adds" in err
        assert "rename or drop them" in err and "rows scored" not in err
    assert (tmp_path / "scored.csv").read_text() == "earlier result\n"
    # --json alone prints the predictions only: nothing clashes there.
    code, out, err = predict(str(tmp_path / "rows.csv"), "--json")
    assert code == 0, err
    assert list(pd.DataFrame(json.loads(out)).columns) == ["probability", "label"]


def test_predict_names_a_model_folder_that_is_not_a_model(mlflow_store, tmp_path, adult_rows, capsys):
    adult_rows.to_csv(tmp_path / "rows.csv", index=False)  # mlflow_store works in tmp_path
    (tmp_path / "empty-model").mkdir()
    model = str(tmp_path / "empty-model")
    code = main(["--params", str(PROJECT_ROOT / "params.yaml"), "predict", "rows.csv", "--model", model])
    err = capsys.readouterr().err
    assert code == 1 and f"{tmp_path / 'empty-model'}: cannot load the model: " in err
    assert "could not score the rows" not in err  # it never loaded


def test_predict_scores_with_the_models_packaged_code(tmp_path, adult_raw, served, predict, monkeypatch):
    """The CLI has imported fairtrain, so a model loaded in its process would run the
    checkout's code, not the code packaged with it (which can differ once the code changed
    since registration). Here this process's serving code is broken: the scores still come,
    from the packaged code, and equal the model's own."""
    rows = adult_sample(adult_raw, 5, seed=4).drop(columns=["income-per-year"])
    rows.to_csv(tmp_path / "rows.csv", index=False)
    expected = served.predict(None, read_raw_table(tmp_path / "rows.csv"))

    def checkout_code(self, context, model_input, params=None):
        raise AssertionError("the checkout's serving code was used")

    monkeypatch.setattr(FairtrainModel, "predict", checkout_code)
    code, out, err = predict(str(tmp_path / "rows.csv"), "--json")
    assert code == 0, err
    np.testing.assert_allclose(
        pd.DataFrame(json.loads(out))["probability"], expected["probability"], rtol=0, atol=1e-9
    )
