"""Check a raw table against the schema declared in ``params.yaml``.

Every problem is collected (not just the first) so that one run tells the user everything
that must be fixed. Each problem names the column, the check, how many values fail, a few
examples with their line numbers in the file, and what was expected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from fairtrain.config import ColumnType, DatasetConfig
from fairtrain.data.parsing import as_text, missing_mask, parse_numeric

MAX_EXAMPLES = 5
# Share of missing values in a column above which we warn (but do not fail).
MISSING_WARNING_SHARE = 0.05


@dataclass
class Problem:
    column: str | None
    check: str
    message: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    expected: str = ""

    def describe(self) -> str:
        where = f"column {self.column!r}: " if self.column else ""
        text = f"{where}{self.message}"
        if self.examples:
            text += f"; e.g. {self.examples}"
        if self.lines:
            text += f" at line(s) {self.lines}"
        if self.expected:
            text += f"; expected {self.expected}"
        return text


@dataclass
class ValidationReport:
    source: str
    rows: int
    columns: list[str]
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "status": "passed" if self.passed else "failed",
            "rows": self.rows,
            "columns": self.columns,
            "error_count": len(self.errors),
            "warning_count": len(self.warnings),
            "errors": [asdict(p) for p in self.errors],
            "warnings": [asdict(p) for p in self.warnings],
        }

    def summary(self) -> str:
        head = (
            f"{self.source}: {len(self.errors)} problem(s) with the schema declared under "
            f"`dataset` in params.yaml"
            if self.errors
            else f"{self.source}: {self.rows} rows match the declared schema"
        )
        lines = [head]
        lines += [f"  error: {p.describe()}" for p in self.errors]
        lines += [f"  warning: {p.describe()}" for p in self.warnings]
        return "\n".join(lines)


def _file_lines(index: pd.Index) -> list[int]:
    # Data row i sits on line i + 2 of a CSV with a header (lines count from 1).
    return [int(i) + 2 for i in index[:MAX_EXAMPLES]]


def _examples(values: pd.Series) -> list[str]:
    return [str(v) for v in values.drop_duplicates().head(MAX_EXAMPLES)]


def is_missing(series: pd.Series, markers: list[str]) -> pd.Series:
    """True where a cell is missing (see ``parsing.missing_mask``), aligned with the series."""
    return pd.Series(missing_mask(series, markers), index=series.index)


def validate_table(frame: pd.DataFrame, schema: DatasetConfig, source: str) -> ValidationReport:
    """Return a report of every mismatch between ``frame`` and ``schema``; never raises on data."""
    report = ValidationReport(source=source, rows=len(frame), columns=[str(c) for c in frame.columns])
    declared = list(schema.columns)

    if len(frame) == 0:
        report.errors.append(
            Problem(None, "empty", "the table has a header but no rows", expected="at least one data row")
        )

    missing_columns = [c for c in declared if c not in frame.columns]
    if missing_columns:
        report.errors.append(
            Problem(
                None,
                "missing_columns",
                f"declared columns absent from the file: {missing_columns}",
                count=len(missing_columns),
                expected=f"all of {declared}",
            )
        )
    unexpected = [str(c) for c in frame.columns if c not in schema.columns]
    if unexpected:
        report.errors.append(
            Problem(
                None,
                "unexpected_columns",
                f"columns in the file that are not declared in dataset.columns: {unexpected}",
                count=len(unexpected),
                expected="declare them (and list them under dataset.drop to ignore them)",
            )
        )

    for column in (c for c in declared if c in frame.columns):
        series = frame[column]
        missing = is_missing(series, schema.missing_values)
        if schema.columns[column] == ColumnType.numeric:
            _check_numeric(report, column, series, schema.missing_values)
        _check_missing(report, schema, column, missing)

    if schema.label in frame.columns:
        _check_label(report, schema, frame[schema.label])
    return report


def _check_numeric(report: ValidationReport, column: str, series: pd.Series, markers: list[str]) -> None:
    _, bad_mask = parse_numeric(series, markers)
    bad = series[bad_mask]
    if len(bad):
        report.errors.append(
            Problem(
                column,
                "type",
                f"{len(bad)} value(s) are not finite numbers",
                count=len(bad),
                examples=_examples(bad),
                lines=_file_lines(bad.index),
                expected="numeric (declared in dataset.columns) or a declared missing marker",
            )
        )


def _check_missing(report: ValidationReport, schema: DatasetConfig, column: str, missing: pd.Series) -> None:
    count = int(missing.sum())
    if not count:
        return
    role = (
        "label"
        if column == schema.label
        else ("sensitive feature" if column in schema.sensitive_features else None)
    )
    if role:
        report.errors.append(
            Problem(
                column,
                "missing",
                f"{count} missing value(s) in the {role}",
                count=count,
                lines=_file_lines(missing[missing].index),
                expected=f"every row to have a {role}",
            )
        )
    elif column not in schema.drop and count / max(len(missing), 1) > MISSING_WARNING_SHARE:
        report.warnings.append(
            Problem(
                column,
                "missing_share",
                f"{count} missing value(s) ({count / len(missing):.1%} of rows); they are imputed in prepare",
                count=count,
            )
        )


def _check_label(report: ValidationReport, schema: DatasetConfig, labels: pd.Series) -> None:
    present = labels[~is_missing(labels, schema.missing_values)].astype("string").str.strip()
    outside = present[~present.isin(schema.label_values)]
    if len(outside):
        report.errors.append(
            Problem(
                schema.label,
                "label_values",
                f"{len(outside)} label value(s) outside label_values",
                count=len(outside),
                examples=_examples(outside),
                lines=_file_lines(outside.index),
                expected=f"one of {schema.label_values}",
            )
        )
    observed = set(present[present.isin(schema.label_values)])
    if len(present) and len(observed) < 2:
        report.errors.append(
            Problem(
                schema.label,
                "single_class",
                f"the label has a single class: {sorted(observed)}",
                expected=f"both of {schema.label_values} to train a binary classifier",
            )
        )


def clean_table(frame: pd.DataFrame, schema: DatasetConfig) -> pd.DataFrame:
    """Typed copy of a validated table: numerics as float64 (missing → NaN), categoricals as
    stripped strings (missing → NA). Columns keep the declared order."""
    out = {}
    for column, kind in schema.columns.items():
        series = frame[column]
        if kind == ColumnType.numeric:
            out[column] = pd.Series(parse_numeric(series, schema.missing_values)[0], index=frame.index)
        else:
            out[column] = as_text(series).mask(missing_mask(series, schema.missing_values))
    return pd.DataFrame(out)
