"""fairtrain.data.validation: every schema mismatch is collected with column, values and lines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairtrain.data.loading import read_raw_table
from fairtrain.data.validation import clean_table, validate_table

LABEL = "income-per-year"
POSITIVE, NEGATIVE = ">50K", "<=50K"


def _by_check(problems, check, column=None):
    found = [p for p in problems if p.check == check and (column is None or p.column == column)]
    assert found, f"no {check!r} problem for {column!r} in {[p.describe() for p in problems]}"
    return found[0]


def test_clean_table_passes_with_only_the_missing_share_warning(raw_frame, params):
    report = validate_table(raw_frame, params.dataset, settings=params.validation, source="tiny.csv")
    assert report.passed, report.summary()
    assert report.errors == []
    assert report.rows == 8
    # One "?" in eight workclass cells is 12.5% > 5%: a warning, never an error.
    warning = _by_check(report.warnings, "missing_share", "workclass")
    assert warning.count == 1
    assert report.to_dict()["status"] == "passed"
    assert "8 rows match the declared schema" in report.summary()


def test_non_numeric_value_names_column_value_and_file_line(write_csv, raw_rows, params):
    rows = raw_rows
    rows[3][0] = "fifty-three"  # data row 3 → line 5 (header is line 1)
    path = write_csv(rows)
    report = validate_table(
        read_raw_table(path), params.dataset, settings=params.validation, source=str(path)
    )
    assert not report.passed
    problem = _by_check(report.errors, "type", "age")
    assert problem.count == 1
    assert problem.examples == ["fifty-three"]
    assert problem.lines == [5]
    # and the line really holds that value
    assert "fifty-three" in path.read_text().splitlines()[problem.lines[0] - 1]
    text = report.summary()
    assert "'age'" in text
    assert "fifty-three" in text
    assert "'fifty-three' (line 5)" in text  # each example with its own line


def test_numeric_check_accepts_padding_and_missing_markers(raw_frame, params):
    frame = raw_frame.copy()
    frame.loc[0, "age"] = " 39 "
    frame.loc[1, "hours-per-week"] = "?"
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    assert [p for p in report.errors if p.check == "type"] == []


def test_many_bad_values_are_counted_with_at_most_five_examples(raw_rows, params):
    frame = pd.DataFrame([raw_rows[0]] * 4 + [raw_rows[-1]] * 4, columns=list(params.dataset.columns))
    frame["age"] = ["x1", "x2", "x3", "x4", "x5", "x6", "x6", "1"]
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    problem = _by_check(report.errors, "type", "age")
    assert problem.count == 7
    assert problem.examples == ["x1", "x2", "x3", "x4", "x5"]
    assert problem.lines == [2, 3, 4, 5, 6]


def test_missing_declared_columns(raw_frame, params):
    report = validate_table(
        raw_frame.drop(columns=["race", "age"]), params.dataset, settings=params.validation, source="t"
    )
    problem = _by_check(report.errors, "missing_columns")
    assert "'age'" in problem.message
    assert "'race'" in problem.message
    assert problem.count == 2


def test_unexpected_undeclared_columns(raw_frame, params):
    report = validate_table(
        raw_frame.assign(zipcode="12345"), params.dataset, settings=params.validation, source="t"
    )
    problem = _by_check(report.errors, "unexpected_columns")
    assert "'zipcode'" in problem.message
    assert problem.count == 1


def test_label_values_outside_label_values(raw_frame, params):
    frame = raw_frame.copy()
    frame.loc[2, LABEL] = ">50K."
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    problem = _by_check(report.errors, "label_values", LABEL)
    assert problem.examples == [">50K."]
    assert problem.lines == [4]
    assert NEGATIVE in problem.expected and POSITIVE in problem.expected


def test_padded_label_values_are_accepted(raw_frame, params):
    frame = raw_frame.copy()
    frame[LABEL] = " " + frame[LABEL]
    assert validate_table(frame, params.dataset, settings=params.validation, source="t").passed


def test_single_class_label(raw_frame, params):
    frame = raw_frame.assign(**{LABEL: NEGATIVE})
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    problem = _by_check(report.errors, "single_class", LABEL)
    assert NEGATIVE in problem.message


def test_missing_label_is_an_error(raw_frame, params):
    frame = raw_frame.copy()
    frame.loc[4, LABEL] = "?"
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    problem = _by_check(report.errors, "missing", LABEL)
    assert problem.lines == [6]


def test_missing_sensitive_feature_is_an_error(raw_frame, params):
    frame = raw_frame.copy()
    frame.loc[6, "sex"] = "?"
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    assert not report.passed
    problem = _by_check(report.errors, "missing", "sex")
    assert problem.count == 1
    assert problem.lines == [8]
    assert "sensitive feature" in problem.message
    assert not [w for w in report.warnings if w.column == "sex"]


def test_missing_share_above_five_percent_is_a_warning_not_an_error(raw_rows, params):
    # 2 of 30 rows (6.7%) missing in an ordinary column: warn; 1 of 30 (3.3%): say nothing.
    frame = pd.DataFrame([raw_rows[i % 8] for i in range(30)], columns=list(params.dataset.columns))
    frame["workclass"] = "Private"
    frame.loc[[3, 17], "workclass"] = "?"
    frame.loc[[9], "hours-per-week"] = "?"
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    assert report.passed, report.summary()
    warning = _by_check(report.warnings, "missing_share", "workclass")
    assert warning.count == 2
    assert not [w for w in report.warnings if w.column == "hours-per-week"]


def test_missing_values_in_dropped_columns_are_not_warned_about(raw_frame, params):
    frame = raw_frame.assign(fnlwgt="?")
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    assert report.passed
    assert not [w for w in report.warnings if w.column == "fnlwgt"]


def test_all_problems_are_collected_in_one_report(raw_frame, params):
    frame = raw_frame.drop(columns=["race"]).assign(zipcode="1")
    frame.loc[0, "age"] = "old"
    frame.loc[1, "sex"] = "?"
    frame.loc[2, LABEL] = "maybe"
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    checks = {(p.check, p.column) for p in report.errors}
    assert checks >= {
        ("missing_columns", None),
        ("unexpected_columns", None),
        ("type", "age"),
        ("missing", "sex"),
        ("label_values", LABEL),
    }
    as_dict = report.to_dict()
    assert as_dict["status"] == "failed"
    assert as_dict["error_count"] == len(report.errors) >= 5
    summary = report.summary()
    assert f"{len(report.errors)} problem(s)" in summary
    for word in ("zipcode", "old", "'sex'", "maybe", "'race'"):
        assert word in summary


def test_header_only_table_is_an_error(params):
    frame = pd.DataFrame({c: pd.Series([], dtype=str) for c in params.dataset.columns})
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    _by_check(report.errors, "empty")


def test_typed_numeric_columns_from_parquet_pass(raw_frame, params):
    frame = raw_frame.assign(age=raw_frame["age"].astype(float))
    frame.loc[0, "age"] = np.nan
    report = validate_table(frame, params.dataset, settings=params.validation, source="t.parquet")
    assert report.passed


def test_non_finite_numbers_are_rejected(raw_frame, params):
    frame = raw_frame.copy()
    frame.loc[2, "age"] = "inf"
    frame.loc[3, "hours-per-week"] = "1e400"
    report = validate_table(frame, params.dataset, settings=params.validation, source="t")
    assert {(p.check, p.column) for p in report.errors} >= {("type", "age"), ("type", "hours-per-week")}


def test_clean_table_types_and_missing_markers(raw_frame, params):
    frame = raw_frame.copy()
    frame.loc[0, "age"] = " 39 "
    frame.loc[1, "hours-per-week"] = "?"
    frame.loc[2, "sex"] = "  Male "
    clean = clean_table(frame, params.dataset)
    assert list(clean.columns) == list(params.dataset.columns)
    for column in [*params.dataset.numeric_features, "fnlwgt"]:
        assert clean[column].dtype == np.float64, column
    assert clean.loc[0, "age"] == 39.0
    assert clean["capital-gain"].tolist() == [2174.0, 0.0, 0.0, 0.0, 0.0, 0.0, 14084.0, 5178.0]
    assert np.isnan(clean.loc[1, "hours-per-week"])
    assert pd.isna(clean.loc[5, "workclass"])  # "?" → NA
    assert clean["workclass"].isna().sum() == 1
    assert clean.loc[2, "sex"] == "Male"  # stripped
    assert clean.loc[6, LABEL] == POSITIVE


def test_clean_table_does_not_modify_its_input(raw_frame, params):
    before = raw_frame.copy()
    clean_table(raw_frame, params.dataset)
    pd.testing.assert_frame_equal(raw_frame, before)


def test_each_example_comes_with_its_own_line(write_csv, raw_rows, raw_params, columns):
    """Examples are distinct values; lines used to be the first five failing rows, so they
    did not belong to the examples shown beside them."""
    from fairtrain.config import params_from_dict

    raw_params["dataset"]["columns"]["sex"] = {"type": "categorical", "categories": ["Male", "Female"]}
    params = params_from_dict(raw_params)
    rows = raw_rows
    for row, value in [(2, "Mael"), (3, "Mael"), (5, "Fem")]:  # lines 4, 5 and 7
        rows[row][columns.index("sex")] = value
    path = write_csv(rows)
    report = validate_table(
        read_raw_table(path), params.dataset, settings=params.validation, source=str(path)
    )
    problem = _by_check(report.errors, "categories", "sex")
    assert problem.count == 3
    assert problem.examples == ["Mael", "Fem"]
    assert problem.lines == [4, 7]  # the first line of each example, in the same order
    assert "e.g. 'Mael' (line 4), 'Fem' (line 7)" in report.summary()
