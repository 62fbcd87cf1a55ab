"""Reference statistics and the drift check, on the real Adult data: a held-out sample must not
drift, batches made to drift (shifted numerics, a new category, a changed label balance) must."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairtrain.cli import EXIT_DRIFT, main
from fairtrain.config import DriftConfig, DriftReferenceConfig
from fairtrain.data.reference_stats import numeric_bin_shares, numeric_cut_points, reference_statistics
from fairtrain.data.split import split_dataset
from fairtrain.data.validation import clean_table
from fairtrain.errors import ConfigError, DataValidationError, FairtrainError
from fairtrain.monitoring.drift import NO_RETRAIN, RETRAIN, check_drift, load_batch, psi
from fairtrain.monitoring.drift_report import drift_page_html
from tests.helpers import PROJECT_ROOT, adult_sample, shrink_params


@pytest.fixture(scope="module")
def sample(adult_raw):
    return adult_sample(adult_raw, 12000)


@pytest.fixture(scope="module")
def splits(sample, project_params):
    typed = clean_table(sample, project_params.dataset)
    return split_dataset(
        typed, project_params.dataset.label, project_params.prepare, project_params.dataset.sensitive_features
    )


@pytest.fixture(scope="module")
def reference(splits, project_params):
    return reference_statistics(splits["train"], project_params.dataset, project_params.drift.reference)


def _check(batch, reference, params, **drift):
    config = params.drift.model_copy(update=drift)
    return check_drift(batch, reference, params.dataset, config)


def _drifted(report):
    return {(c["kind"], c["column"]) for c in report["checks"] if c["drifted"]}


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    assert psi([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    small, large = psi([0.5, 0.5], [0.55, 0.45]), psi([0.5, 0.5], [0.9, 0.1])
    assert 0 < small < 0.1 < large
    assert np.isfinite(psi([1.0, 0.0], [0.0, 1.0]))  # empty bins are floored, not infinite


def test_point_masses_collapse_bins_and_missing_values_get_their_own():
    values = np.array([0.0] * 80 + [5.0, 10.0, 20.0, 40.0] * 5 + [np.nan] * 10)
    cuts = numeric_cut_points(values, 10)
    assert cuts[0] == 0.0 and len(cuts) < 9  # the many zeros form one bin, not nine
    shares = numeric_bin_shares(values, cuts)
    assert len(shares) == len(cuts) + 2
    assert shares[0] == pytest.approx(80 / 110) and shares[-1] == pytest.approx(10 / 110)
    assert sum(shares) == pytest.approx(1.0)


def test_reference_describes_the_training_split(reference, splits, project_params):
    train = splits["train"]
    schema = project_params.dataset
    assert reference["rows"] == len(train)
    assert set(reference["numeric"]) == set(schema.numeric_features)
    assert set(reference["categorical"]) == set(schema.categorical_features)
    age = reference["numeric"]["age"]
    assert age["quantiles"]["values"][50] == pytest.approx(train["age"].median())
    assert len(age["sample"]) == min(len(train), project_params.drift.reference.sample_size)
    assert sum(age["bins"]["shares"]) == pytest.approx(1.0)
    sex = reference["categorical"]["sex"]["shares"]
    assert sex["Male"] == pytest.approx((train["sex"] == "Male").mean())
    positive = train[schema.label] == schema.positive_class
    assert reference["labels"]["positive_rate"] == pytest.approx(positive.mean())
    female = reference["labels"]["groups"]["sex"]["Female"]
    assert female["count"] == int((train["sex"] == "Female").sum())
    assert female["positive_rate"] == pytest.approx(positive[train["sex"] == "Female"].mean())
    json.dumps(reference, allow_nan=False)  # strict JSON


def test_sample_is_bounded(splits, project_params):
    small = reference_statistics(
        splits["train"], project_params.dataset, DriftReferenceConfig(sample_size=100, numeric_bins=4)
    )
    assert len(small["numeric"]["age"]["sample"]) == 100
    assert len(small["numeric"]["age"]["bins"]["cut_points"]) <= 3


def test_held_out_rows_do_not_drift(splits, reference, project_params):
    report = _check(splits["test"], reference, project_params)
    assert report["decision"] == NO_RETRAIN, report["reason"]
    assert report["drifted_checks"] == 0
    kinds = {c["kind"] for c in report["checks"]}
    assert kinds == {"psi", "ks", "label_rate", "group_label_rate"}
    # Every numeric gets PSI and KS, every categorical PSI; small groups are reported unchecked.
    assert sum(c["kind"] == "ks" for c in report["checks"]) == len(project_params.dataset.numeric_features)
    skipped = [c for c in report["checks"] if c.get("skipped")]
    assert skipped and all(c["batch_count"] < project_params.drift.min_group_size for c in skipped)


def test_shifted_numerics_drift(splits, reference, project_params):
    batch = splits["test"].copy()
    batch["age"] = batch["age"] + 12
    batch["hours-per-week"] = batch["hours-per-week"] * 1.3
    report = _check(batch, reference, project_params)
    assert report["decision"] == RETRAIN
    assert _drifted(report) == {
        ("psi", "age"),
        ("ks", "age"),
        ("psi", "hours-per-week"),
        ("ks", "hours-per-week"),
    }
    assert "age" in report["reason"]


def test_unseen_category_and_missingness_drift(splits, reference, project_params):
    batch = splits["test"].copy()
    batch.loc[batch.index[: len(batch) // 3], "workclass"] = "Gig-economy"
    batch.loc[batch.index[: len(batch) // 3], "capital-gain"] = np.nan
    report = _check(batch, reference, project_params)
    workclass = next(c for c in report["checks"] if c["column"] == "workclass")
    assert workclass["drifted"] and workclass["unseen_values"] == ["Gig-economy"]
    assert ("psi", "capital-gain") in _drifted(report)


def test_label_balance_shift_within_a_group_drifts(splits, reference, project_params):
    batch = splits["test"].copy()
    schema = project_params.dataset
    women = batch.index[batch["sex"] == "Female"]
    # Half of the women now have the positive label: their rate moves, features do not.
    batch.loc[women[::2], schema.label] = schema.positive_class
    report = _check(batch, reference, project_params)
    assert ("group_label_rate", "sex=Female") in _drifted(report)
    assert ("label_rate", schema.label) in _drifted(report)
    assert not any(kind in ("psi", "ks") for kind, _ in _drifted(report))


def test_min_drifted_checks_sets_the_decision(splits, reference, project_params):
    batch = splits["test"].copy()
    batch["age"] = batch["age"] + 12
    strict = _check(batch, reference, project_params, min_drifted_checks=3)
    assert strict["drifted_checks"] == 2 and strict["decision"] == NO_RETRAIN


def test_reference_for_other_columns_is_refused(splits, reference, project_params):
    other = {**reference, "numeric": {k: v for k, v in reference["numeric"].items() if k != "age"}}
    with pytest.raises(FairtrainError, match="rerun `dvc repro prepare`"):
        _check(splits["test"], other, project_params)


def test_html_names_the_decision_and_drifted_columns(splits, reference, project_params):
    batch = splits["test"].copy()
    batch["age"] = batch["age"] + 12
    page = drift_page_html(_check(batch, reference, project_params))
    assert "Decision: retrain" in page and '<tr class="drifted"><td>age</td>' in page


def test_drift_config_rejects_unknown_keys(project_params):
    with pytest.raises(ConfigError, match=r"drift\.psi_treshold: unknown key"):
        shrink_params(project_params, drift={"psi_treshold": 0.1})
    assert DriftConfig().psi_threshold == 0.2


def test_invalid_batch_is_rejected_with_the_column(tmp_path, adult_raw, project_params):
    batch = adult_sample(adult_raw, 50)
    batch.loc[2, "age"] = "old"
    batch.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match="age"):
        load_batch(tmp_path / "bad.csv", project_params.dataset)


def test_cli_exit_codes_and_report_files(tmp_path, sample, reference, splits, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reference.json").write_text(json.dumps(reference))
    held_out = sample.loc[splits["test"].index]  # raw text cells, as a new batch would arrive
    held_out.to_csv(tmp_path / "ok.csv", index=False)
    shifted = held_out.copy()
    shifted["age"] = (shifted["age"].astype(int) + 12).astype(str)
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    common = ["--params", str(PROJECT_ROOT / "params.yaml"), "drift", "--reference", "reference.json"]

    assert main([*common, "--batch", "ok.csv", "--report", "ok.json", "--html", "ok.html"]) == 0
    assert "decision: no_retrain" in capsys.readouterr().out
    assert json.loads((tmp_path / "ok.json").read_text())["decision"] == NO_RETRAIN
    assert main([*common, "--batch", "shifted.csv", "--json"]) == EXIT_DRIFT
    assert json.loads(capsys.readouterr().out)["decision"] == RETRAIN
    assert main([*common, "--batch", "missing.csv"]) == 1
    assert "file not found" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # the drift check needs no tracking store
    pd.read_csv(tmp_path / "ok.csv")  # the batch file itself is untouched


def test_drift_report_paths_follow_the_predict_rule(tmp_path, sample, reference, splits, capsys, monkeypatch):
    """Missing folders are created; a path through a file is refused before the check; a
    failed write names the report and keeps the earlier one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reference.json").write_text(json.dumps(reference))
    sample.loc[splits["test"].index].to_csv(tmp_path / "batch.csv", index=False)
    common = [
        *("--params", str(PROJECT_ROOT / "params.yaml"), "drift"),
        *("--reference", "reference.json", "--batch", "batch.csv"),
    ]

    assert main([*common, "--report", "reports/drift/batch.json"]) == 0
    assert json.loads((tmp_path / "reports/drift/batch.json").read_text())["decision"] == NO_RETRAIN
    capsys.readouterr()

    (tmp_path / "notes.txt").write_text("a file\n")
    assert main([*common, "--html", "notes.txt/drift.html"]) == 1
    assert "--html notes.txt/drift.html: notes.txt is a file, not a folder" in capsys.readouterr().err

    earlier = (tmp_path / "reports/drift/batch.json").read_text()
    monkeypatch.setattr("fairtrain.io.os.replace", _fail_with_disk_full)
    assert main([*common, "--report", "reports/drift/batch.json"]) == 1
    err = capsys.readouterr().err
    assert "reports/drift/batch.json: cannot write the drift report" in err and "Traceback" not in err
    assert (tmp_path / "reports/drift/batch.json").read_text() == earlier
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)

    # The HTML page fails after the JSON report was written: neither replaces the earlier pair.
    both = ["--report", "reports/drift/batch.json", "--html", "reports/drift/batch.html"]
    assert main([*common, *both]) == 0
    pair = [(tmp_path / f"reports/drift/batch.{ext}").read_text() for ext in ("json", "html")]
    capsys.readouterr()
    shifted = sample.loc[splits["test"].index].copy()  # another batch: another report
    shifted["age"] = (shifted["age"].astype(int) + 12).astype(str)
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    monkeypatch.setattr("fairtrain.monitoring.drift_report.drift_page_html", _fail_with_disk_full)
    assert main([*common[:-1], "shifted.csv", *both]) == 1
    assert "cannot write the drift report" in capsys.readouterr().err
    assert [(tmp_path / f"reports/drift/batch.{ext}").read_text() for ext in ("json", "html")] == pair


def _fail_with_disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_boolean_columns_are_compared_by_their_shares():
    """The loans example declares two boolean columns and two datetimes: booleans are
    described and checked like categoricals; datetimes are left out (see reference_stats)."""
    from fairtrain.config import load_params
    from fairtrain.data.generators import loans_table

    params = load_params(PROJECT_ROOT / "examples/loans/params.yaml")
    schema = params.dataset
    typed = clean_table(loans_table(3000, seed=1), schema)
    train, later = typed.iloc[:2000], typed.iloc[2000:].reset_index(drop=True)
    reference = reference_statistics(train, schema, params.drift.reference)
    assert set(schema.boolean_features) == {"has_guarantor", "first_time_borrower"}
    assert set(schema.boolean_features) <= set(reference["categorical"])
    assert not set(schema.datetime_features) & {*reference["numeric"], *reference["categorical"]}

    def guarantor_check(batch):
        report = check_drift(batch, reference, schema, params.drift)
        return next(c for c in report["checks"] if c["column"] == "has_guarantor")

    assert not guarantor_check(later)["drifted"]
    everyone = later.assign(has_guarantor=pd.array([True] * len(later), dtype="boolean"))
    assert guarantor_check(everyone)["drifted"]


def test_appending_the_same_batch_gives_the_same_bytes(tmp_path, sample, project_params):
    """The appended .csv.gz has no name or time in its gzip header, so DVC and the lineage's
    data hash see the same file whenever the same rows are appended (the temporary file the
    write goes through has a random name)."""
    from fairtrain.data.generators import write_csv_gz
    from fairtrain.data.loading import read_raw_table
    from fairtrain.monitoring.batches import append_batch

    batch = tmp_path / "batch.csv"
    sample.iloc[:300].to_csv(batch, index=False)
    # 800 rows hold race groups below min_group_rows: the merged file is checked with warnings.
    settings = project_params.validation.model_copy(update={"small_group": "warn"})
    copies = []
    for name in ("first", "second"):
        dataset = tmp_path / name / "adult.csv.gz"
        write_csv_gz(sample.iloc[300:800], dataset)
        assert append_batch(dataset, batch, project_params.dataset, settings) == 800
        copies.append(dataset.read_bytes())
    assert copies[0] == copies[1]
    merged = read_raw_table(tmp_path / "first" / "adult.csv.gz")
    assert len(merged) == 800 and list(merged.columns) == list(sample.columns)


def test_the_same_batch_is_not_appended_twice(tmp_path, sample, project_params, capsys, monkeypatch):
    """A retraining rerun after a failed `dvc repro`, or a forced rerun, appends the batch it
    already appended: the ledger beside the dataset refuses it, and the CLI says so and
    changes nothing (exit 0, so the rerun goes on). Another batch still goes in."""
    import yaml

    from fairtrain.data.generators import write_csv_gz
    from fairtrain.monitoring.batches import BatchAlreadyAppended, append_batch, ledger_path

    settings = project_params.validation.model_copy(update={"small_group": "warn"})
    dataset = tmp_path / "data" / "adult.csv.gz"
    write_csv_gz(sample.iloc[300:800], dataset)
    first, second = tmp_path / "week1.csv", tmp_path / "week2.csv"
    sample.iloc[:300].to_csv(first, index=False)
    sample.iloc[800:900].to_csv(second, index=False)

    assert append_batch(dataset, first, project_params.dataset, settings) == 800
    after_first = dataset.read_bytes()
    ledger = json.loads(ledger_path(dataset).read_text())
    assert [(e["file"], e["rows"]) for e in ledger["batches"]] == [("week1.csv", 300)]
    with pytest.raises(BatchAlreadyAppended, match=r"week1.csv: this batch was already appended .*300 rows"):
        append_batch(dataset, first, project_params.dataset, settings)
    assert dataset.read_bytes() == after_first

    # The CLI, as scripts/retrain.sh runs it.
    raw = project_params.model_dump(mode="json", by_alias=True)
    raw["dataset"]["path"] = str(dataset)
    raw["validate"]["small_group"] = "warn"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert main(["--params", "params.yaml", "append-batch", str(first)]) == 0
    assert "already appended" in capsys.readouterr().out and dataset.read_bytes() == after_first
    assert main(["--params", "params.yaml", "append-batch", str(second)]) == 0
    assert f"{dataset}: 900 rows" in capsys.readouterr().out
    assert [e["file"] for e in json.loads(ledger_path(dataset).read_text())["batches"]] == [
        "week1.csv",
        "week2.csv",
    ]
    # The validate stage records the ledger beside the data it read, for the model card.
    params = project_params.model_copy(update={"validation": settings})
    _validate_file(dataset, params, tmp_path)
    recorded = json.loads((tmp_path / "validation.json").read_text())
    assert recorded["rows"] == 900
    assert recorded["appended_batches"] == json.loads(ledger_path(dataset).read_text())["batches"]

    ledger_path(dataset).write_text('{"batches": ["week1.csv"]}')  # edited by hand
    with pytest.raises(DataValidationError, match=r"batches.json: not a batch ledger \(TypeError"):
        append_batch(dataset, first, project_params.dataset, settings)
    (tmp_path / "validation.json").unlink()
    with pytest.raises(DataValidationError, match=r"batches.json: not a batch ledger"):
        _validate_file(dataset, params, tmp_path)
    assert not (tmp_path / "validation.json").exists()  # refused before anything was written


def _validate_file(path, params, tmp_path):
    """Run the validate stage on a file; raises (DataValidationError) where `dvc repro` would stop."""
    from fairtrain.stages.validate_stage import validate_stage

    return validate_stage(params, path, tmp_path / "validated.parquet", tmp_path / "validation.json")


def test_parquet_batch_appended_to_csv_gz_dataset_passes_validation(tmp_path, sample, project_params):
    """A typed batch is written as the CSV's own text: missing values as the declared marker
    (not an empty cell, which failed validation) and whole numbers without ".0"."""
    from fairtrain.data.generators import write_csv_gz
    from fairtrain.data.loading import read_raw_table
    from fairtrain.monitoring.batches import append_batch

    schema = project_params.dataset
    dataset = tmp_path / "adult.csv.gz"
    write_csv_gz(sample.iloc[:5000], dataset)
    rows = sample.iloc[5000:5300].reset_index(drop=True)
    rows.loc[1, "age"] = "?"
    clean_table(rows, schema).to_parquet(tmp_path / "batch.parquet", index=False)

    assert append_batch(dataset, tmp_path / "batch.parquet", schema, project_params.validation) == 5300
    merged = read_raw_table(dataset)
    assert merged.loc[5001, "age"] == "?"
    assert merged.loc[5000, "age"] == rows.loc[0, "age"] and "." not in merged.loc[5000, "fnlwgt"]
    assert merged["workclass"].iloc[5000:].tolist() == rows["workclass"].str.strip().tolist()  # "?" stays
    assert _validate_file(dataset, project_params, tmp_path).passed


def test_csv_batch_with_missing_marker_appended_to_parquet_dataset(tmp_path, sample, project_params):
    """ "?" in a numeric CSV column is a missing value, stored as null in the Parquet dataset
    (it used to stop the append with a bare ValueError from a failed cast)."""
    from fairtrain.monitoring.batches import append_batch

    schema = project_params.dataset
    dataset = tmp_path / "adult.parquet"
    clean_table(sample.iloc[:5000], schema).to_parquet(dataset, index=False)
    rows = sample.iloc[5000:5300].reset_index(drop=True)
    rows.loc[1, "age"] = "?"
    rows.to_csv(tmp_path / "batch.csv", index=False)

    assert append_batch(dataset, tmp_path / "batch.csv", schema, project_params.validation) == 5300
    merged = pd.read_parquet(dataset)
    assert merged["age"].dtype == np.float64 and np.isnan(merged.loc[5001, "age"])
    assert merged.loc[5000, "age"] == float(rows.loc[0, "age"])
    assert _validate_file(dataset, project_params, tmp_path).passed


def test_values_that_do_not_fit_the_parquet_dataset_are_refused_naming_both_files(
    tmp_path, sample, project_params
):
    from fairtrain.monitoring.batches import append_batch

    schema = project_params.dataset
    dataset = tmp_path / "adult.parquet"
    typed = clean_table(sample.iloc[:3000], schema)
    typed.astype({"age": "int64"}).to_parquet(dataset, index=False)
    before = dataset.read_bytes()
    rows = sample.iloc[3000:3100].reset_index(drop=True)
    rows.loc[4, "age"] = "41.5"
    rows.to_csv(tmp_path / "batch.csv", index=False)
    with pytest.raises(DataValidationError) as error:
        append_batch(dataset, tmp_path / "batch.csv", schema, project_params.validation)
    message = str(error.value)
    assert "batch.csv" in message and "adult.parquet" in message and "'age'" in message
    assert "41.5" in message and "int64" in message
    assert dataset.read_bytes() == before


def test_a_merge_that_would_fail_validation_never_lands(tmp_path, sample, project_params):
    """Batches may hold small groups (a warning); the merged file must pass the validate stage
    as configured, or the dataset is left as it was."""
    from fairtrain.data.generators import write_csv_gz
    from fairtrain.monitoring.batches import append_batch

    dataset = tmp_path / "adult.csv.gz"
    write_csv_gz(sample.iloc[:3000][sample.iloc[:3000]["race"] != "Other"], dataset)
    before = dataset.read_bytes()
    batch = sample.iloc[3000:3300]
    batch = pd.concat([batch[batch["race"] != "Other"], batch[batch["race"] == "Other"].head(1)])
    batch.to_csv(tmp_path / "batch.csv", index=False)
    with pytest.raises(DataValidationError, match=r"merged table would fail validation[\s\S]*'Other': 1"):
        append_batch(dataset, tmp_path / "batch.csv", project_params.dataset, project_params.validation)
    assert dataset.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_batch_validation_uses_the_validate_settings_of_params(tmp_path, sample, project_params, caplog):
    """`drift` and `append-batch` check a batch with params.yaml's `validate:` section (small
    groups only warn), not the built-in defaults."""
    from fairtrain.monitoring.drift_report import run_drift_check

    batch = sample.iloc[:300].copy()
    batch.loc[batch.index[:60], "workclass"] = "?"  # 20% missing
    batch.to_csv(tmp_path / "batch.csv", index=False)
    reference = reference_statistics(
        clean_table(sample.iloc[300:3000], project_params.dataset),
        project_params.dataset,
        project_params.drift.reference,
    )
    (tmp_path / "reference.json").write_text(json.dumps(reference))

    def warned(share: float) -> bool:
        params = shrink_params(project_params, validate={"missing_warning_share": share})
        caplog.clear()
        run_drift_check(params, tmp_path / "batch.csv", tmp_path / "reference.json", None, None)
        return any(
            "'workclass'" in r.getMessage() and "missing value" in r.getMessage() for r in caplog.records
        )

    assert warned(0.05)
    assert not warned(0.5)
    strict = project_params.validation.model_copy(update={"small_group": "error", "min_group_rows": 1000})
    load_batch(tmp_path / "batch.csv", project_params.dataset, strict)  # small groups never fail a batch
