"""Every bad input the validate stage must reject: the stage raises (the script exits 1), the
report (JSON + text summary) names the problem, and no validated Parquet is written."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pandas as pd
import pytest

from fairtrain.config import params_from_dict
from fairtrain.errors import DataValidationError
from fairtrain.stages.validate_stage import validate_stage
from tests.helpers import PROJECT_ROOT
from tests.unit.conftest import COLUMNS, RAW_ROWS


def _params(raw_params, **dataset):
    raw_params["dataset"]["columns"]["age"] = {"type": "numeric", "min": 0, "max": 120}
    raw_params["dataset"]["columns"]["sex"] = {"type": "categorical", "categories": ["Male", "Female"]}
    raw_params["dataset"].update(dataset)
    return params_from_dict(raw_params)


def _csv_text(rows, header=COLUMNS) -> str:
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def _run(params, path, tmp_path):
    out, report = tmp_path / "out/validated.parquet", tmp_path / "out/validation.json"
    with pytest.raises(DataValidationError) as caught:
        validate_stage(params, path, out, report)
    assert not out.exists(), "a failed validation must not write the validated table"
    payload = json.loads(report.read_text())
    assert payload["status"] == "failed"
    summary = report.with_suffix(".txt").read_text()
    assert summary.strip() and str(path) in summary
    return payload, str(caught.value)


def _problem(payload, check, column=None):
    found = [
        e for e in payload["errors"] if e["check"] == check and (column is None or e["column"] == column)
    ]
    assert found, f"no {check!r} error for {column!r} in {payload['errors']}"
    return found[0]


def _rows_with(cell_edits):
    rows = [list(r) for r in RAW_ROWS]
    for (row, column), value in cell_edits.items():
        rows[row][COLUMNS.index(column)] = value
    return rows


# (name, cell edits, check, column, text the message must contain)
CELL_CASES = [
    ("not_a_number", {(2, "age"): "thirty"}, "type", "age", "thirty"),
    ("number_with_unit", {(2, "hours-per-week"): "40h"}, "type", "hours-per-week", "40h"),
    ("out_of_range", {(1, "age"): "250"}, "range", "age", "250"),
    ("negative_age", {(1, "age"): "-3"}, "range", "age", "-3"),
    ("unknown_category", {(0, "sex"): "Mle"}, "categories", "sex", "Mle"),
    ("label_outside_values", {(0, "income-per-year"): ">50K."}, "label_values", "income-per-year", ">50K."),
    ("missing_label", {(0, "income-per-year"): "?"}, "missing", "income-per-year", "label"),
    ("sensitive_nan", {(3, "race"): "?"}, "missing", "race", "sensitive feature"),
]


@pytest.mark.parametrize(
    ("edits", "check", "column", "needle"), [c[1:] for c in CELL_CASES], ids=[c[0] for c in CELL_CASES]
)
def test_bad_cells_are_named_with_value_and_line(tmp_path, raw_params, edits, check, column, needle):
    path = tmp_path / "bad.csv"
    path.write_text(_csv_text(_rows_with(edits)), encoding="utf-8")
    payload, message = _run(_params(raw_params), path, tmp_path)
    problem = _problem(payload, check, column)
    (row, _), value = next(iter(edits.items()))
    assert problem["lines"] == [row + 2]
    assert needle in json.dumps(problem) and column in message
    if value != "?":
        assert problem["examples"] == [value]


def test_single_class_label(tmp_path, raw_params):
    path = tmp_path / "one_class.csv"
    path.write_text(_csv_text([[*r[:-1], "<=50K"] for r in RAW_ROWS]), encoding="utf-8")
    payload, message = _run(_params(raw_params), path, tmp_path)
    assert "single class" in _problem(payload, "single_class", "income-per-year")["message"]
    assert "single class" in message


@pytest.mark.parametrize(
    ("header", "check", "needle"),
    [
        ([c for c in COLUMNS if c != "hours-per-week"], "missing_columns", "hours-per-week"),
        ([c for c in COLUMNS if c != "sex"], "missing_columns", "sex"),  # a sensitive feature
        ([*COLUMNS, "zipcode"], "unexpected_columns", "zipcode"),
    ],
    ids=["missing_column", "missing_sensitive_column", "unexpected_column"],
)
def test_column_set_problems(tmp_path, raw_params, header, check, needle):
    frame = pd.DataFrame(RAW_ROWS, columns=COLUMNS).assign(zipcode="12345")[header]
    path = tmp_path / "cols.csv"
    frame.to_csv(path, index=False)
    payload, message = _run(_params(raw_params), path, tmp_path)
    assert needle in _problem(payload, check)["message"] and needle in message


# (name, file bytes, text the message must contain)
FILE_CASES = [
    ("empty_file", b"", "empty"),
    ("header_only", (",".join(COLUMNS) + "\n").encode(), "no rows"),
    (
        "duplicate_header",
        _csv_text(RAW_ROWS, [*COLUMNS[:-2], "sex", COLUMNS[-1]]).encode(),
        "duplicate column",
    ),
    (
        "too_many_fields",
        _csv_text([*RAW_ROWS[:3], [*RAW_ROWS[3], "extra"], *RAW_ROWS[4:]]).encode(),
        "too many fields",
    ),
    (
        "unterminated_quote",
        _csv_text(RAW_ROWS).encode() + b'40,"Private,1,0,40,Male,White,<=50K\n',
        "unterminated quote",
    ),
    ("non_utf8", _csv_text(RAW_ROWS).replace("Self-emp", "S\xe9lf-emp").encode("latin-1"), "UTF-8 on line 3"),
]


@pytest.mark.parametrize(("content", "needle"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_unreadable_files_are_named(tmp_path, raw_params, content, needle):
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    _, message = _run(_params(raw_params), path, tmp_path)
    assert needle in message
    assert str(path) in message


def test_too_few_fields_names_the_line(tmp_path, raw_params):
    rows = [list(r) for r in RAW_ROWS]
    rows[4] = rows[4][:-2]  # data row 4 → line 6
    path = tmp_path / "short.csv"
    path.write_text(_csv_text(rows), encoding="utf-8")
    payload, message = _run(_params(raw_params), path, tmp_path)
    problem = _problem(payload, "field_count")
    assert problem["lines"] == [6] and "too few fields (6 instead of 8)" in message


def test_truncated_parquet(tmp_path, raw_params):
    whole = tmp_path / "whole.parquet"
    pd.DataFrame(RAW_ROWS, columns=COLUMNS).to_parquet(whole, index=False)
    path = tmp_path / "cut.parquet"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    _, message = _run(_params(raw_params), path, tmp_path)
    assert "truncated" in message and str(path) in message


def test_numbers_stored_as_strings_in_parquet(tmp_path, raw_params):
    frame = pd.DataFrame(RAW_ROWS, columns=COLUMNS).astype(
        {c: float for c in ["fnlwgt", "capital-gain", "hours-per-week"]}
    )
    path = tmp_path / "strings.parquet"
    frame.to_parquet(path, index=False)  # age stays text
    payload, message = _run(_params(raw_params), path, tmp_path)
    assert _problem(payload, "stored_as_string", "age")["examples"][:2] == ["39", "50"]
    assert "numbers stored as strings" in message


def test_group_too_small_to_audit_is_an_error_or_a_warning(tmp_path, raw_params):
    path = tmp_path / "small.csv"
    path.write_text(_csv_text(RAW_ROWS), encoding="utf-8")
    raw_params["validate"] = {"min_group_rows": 4}  # Female has 3 rows
    payload, _ = _run(_params(raw_params), path, tmp_path)
    problem = _problem(payload, "small_group", "sex")
    assert "'Female': 3" in problem["message"] and "Male" not in problem["message"]
    raw_params["validate"]["small_group"] = "warn"
    report = validate_stage(_params(raw_params), path, tmp_path / "v.parquet", tmp_path / "v.json")
    assert report.passed and [w.check for w in report.warnings if w.column == "sex"] == ["small_group"]


def test_missing_share_threshold_comes_from_params(tmp_path, raw_params):
    path = tmp_path / "t.csv"
    path.write_text(_csv_text(RAW_ROWS), encoding="utf-8")  # workclass: 1 of 8 missing (12.5%)
    raw_params["validate"] = {"min_group_rows": 1, "missing_warning_share": 0.2}
    report = validate_stage(_params(raw_params), path, tmp_path / "v.parquet", tmp_path / "v.json")
    assert report.passed and report.warnings == []
    raw_params["validate"]["missing_warning_share"] = 0.1
    report = validate_stage(_params(raw_params), path, tmp_path / "v.parquet", tmp_path / "v.json")
    assert [(w.column, w.check) for w in report.warnings] == [("workclass", "missing_share")]
    assert "missing_share" in (tmp_path / "v.txt").read_text() or "12.5%" in (tmp_path / "v.txt").read_text()


def test_lines_are_the_files_after_empty_lines_and_skipped_rows(tmp_path, raw_params):
    """A blank line and a row with too few fields come before the bad cells: every reported
    line is still the line of the file that holds the problem."""
    rows = [",".join(r) for r in _rows_with({(3, "age"): "thirty", (6, "sex"): "Mle"})]
    rows.insert(1, "")  # a blank line after data row 0
    rows.insert(3, "39,State-gov,Bachelors")  # too few fields, after data row 1
    path = tmp_path / "shifted.csv"
    path.write_text("\n".join([",".join(COLUMNS), *rows]) + "\n", encoding="utf-8")
    raw_params["validate"] = {"min_group_rows": 1, "chunk_rows": 3}
    payload, message = _run(_params(raw_params), path, tmp_path)
    file_lines = path.read_text().splitlines()
    for check, column, needle in [
        ("type", "age", "thirty"),
        ("categories", "sex", "Mle"),
        ("field_count", None, "39,State-gov,Bachelors"),
    ]:
        (line,) = _problem(payload, check, column)["lines"]
        assert needle in file_lines[line - 1].split(",") or file_lines[line - 1] == needle, (check, line)
    assert "'thirty' (line 7)" in message  # data row 3, after the blank and the short row


def test_every_problem_is_collected_across_chunks(tmp_path, raw_params):
    rows = _rows_with(
        {(0, "age"): "old", (7, "age"): "999", (6, "sex"): "F", (5, "income-per-year"): "maybe"}
    )
    path = tmp_path / "many.csv"
    path.write_text(_csv_text(rows), encoding="utf-8")
    raw_params["validate"] = {"min_group_rows": 1, "chunk_rows": 3}  # three chunks
    payload, _ = _run(_params(raw_params), path, tmp_path)
    found = {(e["check"], e["column"], tuple(e["lines"])) for e in payload["errors"]}
    assert found == {
        ("type", "age", (2,)),
        ("range", "age", (9,)),
        ("categories", "sex", (8,)),
        ("label_values", "income-per-year", (7,)),
    }


def test_bins_boolean_and_datetime_cells(tmp_path, raw_params):
    raw_params["dataset"]["columns"] = {
        "age": "numeric",
        "member": "boolean",
        "joined": {"type": "datetime", "format": "%Y-%m-%d"},
        "sex": "categorical",
        "y": "categorical",
    }
    raw_params["dataset"].update(
        label="y",
        label_values=["no", "yes"],
        positive_class="yes",
        sensitive_features=["sex", "age"],
        bins={"age": {"edges": [18, 40, 100], "labels": ["18-39", "40+"]}},
        drop=[],
    )
    raw_params["prepare"]["log_transform"] = []
    rows = [
        ["30", "yes", "2020-01-05", "Male", "no"],
        ["12", "maybe", "2020-13-40", "Female", "yes"],
        ["50", "FALSE", "2021-02-03", "Male", "yes"],
    ]
    path = tmp_path / "typed.csv"
    path.write_text(_csv_text(rows, ["age", "member", "joined", "sex", "y"]), encoding="utf-8")
    payload, _ = _run(params_from_dict(raw_params), path, tmp_path)
    assert _problem(payload, "bins", "age")["examples"] == ["12"]
    assert _problem(payload, "boolean", "member")["examples"] == ["maybe"]
    assert _problem(payload, "datetime", "joined")["examples"] == ["2020-13-40"]


def test_script_exits_non_zero_and_prints_the_problem(tmp_path, raw_params):
    import yaml

    path = tmp_path / "bad.csv"
    path.write_text(_csv_text(_rows_with({(2, "age"): "thirty"})), encoding="utf-8")
    raw_params["dataset"]["path"] = str(path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw_params))
    out = tmp_path / "validated.parquet"
    result = subprocess.run(
        [
            sys.executable,
            "pipelines/validate.py",
            "--params",
            str(params_file),
            "--raw",
            str(path),
            "--out",
            str(out),
            "--report",
            str(tmp_path / "report.json"),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "'age'" in result.stderr and "thirty" in result.stderr
    assert not out.exists()


def test_gzipped_csv_passes_and_writes_typed_parquet(tmp_path, raw_params):
    path = tmp_path / "ok.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(_csv_text(RAW_ROWS))
    raw_params["validate"] = {"min_group_rows": 1, "chunk_rows": 3}
    report = validate_stage(_params(raw_params), path, tmp_path / "v.parquet", tmp_path / "v.json")
    assert report.passed
    frame = pd.read_parquet(tmp_path / "v.parquet")
    assert len(frame) == 8 and frame["age"].dtype == "float64"
    assert frame["workclass"].isna().sum() == 1


def test_typed_parquet_passes_in_chunks(tmp_path, raw_params):
    numeric = ["age", "fnlwgt", "capital-gain", "hours-per-week"]
    frame = pd.DataFrame(RAW_ROWS, columns=COLUMNS).replace("?", None).astype({c: float for c in numeric})
    path = tmp_path / "typed.parquet"
    frame.to_parquet(path, index=False, row_group_size=3)
    raw_params["validate"] = {"min_group_rows": 1, "chunk_rows": 3}
    report = validate_stage(_params(raw_params), path, tmp_path / "v.parquet", tmp_path / "v.json")
    assert report.passed, report.summary()
    out = pd.read_parquet(tmp_path / "v.parquet")
    assert len(out) == 8 and out["workclass"].isna().sum() == 1


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (KeyboardInterrupt("stopped by signal 15"), "interrupted (stopped by signal 15)"),
        (OSError("Truncated compressed stream"), "OSError: Truncated compressed stream"),
    ],
    ids=["sigterm", "crash"],
)
def test_a_run_stopped_mid_read_reports_failed_not_passed(tmp_path, raw_params, monkeypatch, error, needle):
    """An interrupt or crash after some rows were read: the report says failed and why,
    never "passed" over the rows read so far (it used to)."""
    from fairtrain.data import file_check

    path = tmp_path / "t.csv"
    path.write_text(_csv_text(RAW_ROWS), encoding="utf-8")

    def first_chunk_then_fail(*args, **kwargs):
        yield pd.DataFrame(RAW_ROWS[5:], columns=COLUMNS)  # both classes: it used to "pass"
        raise error

    monkeypatch.setattr(file_check, "iter_raw_chunks", first_chunk_then_fail)
    out, report = tmp_path / "v.parquet", tmp_path / "v.json"
    with pytest.raises(type(error)):
        validate_stage(_params(raw_params), path, out, report)
    assert not out.exists()
    payload = json.loads(report.read_text())
    assert payload["status"] == "failed" and payload["rows"] == 3
    aborted = _problem(payload, "aborted")
    assert needle in aborted["message"]
    assert "aborted" not in [e["check"] for e in payload["errors"] if e is not aborted]
    assert needle in report.with_suffix(".txt").read_text()


def test_a_truncated_gzip_is_a_readable_problem(tmp_path, raw_params):
    import random

    rng = random.Random(0)  # varied cells, so the compressed stream is long enough to cut
    rows = [
        [str(rng.randint(17, 90)), *r[1:2], str(rng.randint(10**4, 10**6)), *r[3:]] for r in RAW_ROWS * 3000
    ]
    whole = gzip.compress(_csv_text(rows).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    payload, message = _run(_params(raw_params), path, tmp_path)
    problem = _problem(payload, "readable")
    assert "truncated" in problem["message"] and str(path) in problem["message"]
    assert "truncated" in message


@pytest.mark.parametrize(
    "content",
    [b"", _csv_text(RAW_ROWS).replace("State-gov", "St\xe4te-gov").encode("latin-1")],
    ids=["empty_file", "non_utf8_in_first_block"],
)
def test_a_read_failure_is_not_also_reported_as_no_rows(tmp_path, raw_params, content):
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    payload, _ = _run(_params(raw_params), path, tmp_path)
    assert [e["check"] for e in payload["errors"]] == ["readable"]


def test_an_unterminated_quote_reports_the_lines_it_swallowed(tmp_path, raw_params):
    rows = [",".join(r) for r in RAW_ROWS]
    rows[2] = rows[2].replace("Private", '"Private')  # data row 2, line 4; six rows follow
    path = tmp_path / "quote.csv"
    path.write_text("\n".join([",".join(COLUMNS), *rows]) + "\n", encoding="utf-8")
    payload, message = _run(_params(raw_params), path, tmp_path)
    problem = _problem(payload, "unterminated_quote")
    assert problem["lines"] == [4] and problem["examples"] == [rows[2]]
    assert problem["count"] == 6  # the row and the five lines after it
    assert "swallowed the 5 line(s) after it" in message


def test_a_failure_after_a_passed_report_turns_it_failed(tmp_path, raw_params, monkeypatch):
    """The report is written before the validated table is renamed into place: if that
    rename fails, the report must not be left saying "passed"."""
    from fairtrain import io

    path = tmp_path / "t.csv"
    path.write_text(_csv_text(RAW_ROWS), encoding="utf-8")
    real_replace = io.os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(".parquet"):
            raise OSError("No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", failing_replace)
    out, report = tmp_path / "v.parquet", tmp_path / "v.json"
    with pytest.raises(OSError, match="No space left"):
        validate_stage(_params(raw_params), path, out, report)
    payload = json.loads(report.read_text())
    assert payload["status"] == "failed" and not out.exists()
    assert "No space left on device" in _problem(payload, "aborted")["message"]
