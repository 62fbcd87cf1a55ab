"""Check a raw table against the schema declared in ``params.yaml``.

Every problem is collected (not just the first) so that one run tells the user everything
that must be fixed. Each problem names the column, the check, how many values fail, a few
examples with their line numbers in the file, and what was expected.

Cell-level checks (types, ranges, allowed categories, label values, missing sensitive
values) are a pandera schema built from the declaration and run lazily, so pandera collects
every failing cell. The table is checked chunk by chunk (``TableValidator.feed``) to bound
memory; checks that need the whole table (empty file, single-class label, group sizes,
share of missing values) are aggregated across chunks in ``TableValidator.finish``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa

from fairtrain.config import ColumnSpec, ColumnType, DatasetConfig, ValidateConfig
from fairtrain.data.parsing import (
    as_text,
    bin_labels,
    missing_mask,
    parse_boolean,
    parse_datetime,
    parse_numeric,
)

MAX_EXAMPLES = 5
# Default share of missing values in a column above which we warn (validate.missing_warning_share).
MISSING_WARNING_SHARE = 0.05


# The checks of rows the CSV reader itself skipped; their lines are the reader's row numbers.
FIELD_COUNT, UNTERMINATED_QUOTE = "field_count", "unterminated_quote"
READER_CHECKS = frozenset({FIELD_COUNT, UNTERMINATED_QUOTE})


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
        if self.examples and len(self.lines) == len(self.examples):
            # lines[i] is where examples[i] was found: show each value with its line.
            pairs = ", ".join(f"{e!r} (line {n})" for e, n in zip(self.examples, self.lines, strict=True))
            text += f"; e.g. {pairs}"
        else:
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


def is_missing(series: pd.Series, markers: list[str]) -> pd.Series:
    """True where a cell is missing (see ``parsing.missing_mask``), aligned with the series."""
    return pd.Series(missing_mask(series, markers), index=series.index)


# ---- the pandera schema built from the declaration ------------------------------------------

# check name → (message, expected) templates, filled per column by ``_expected``.
_CHECK_TEXT = {
    "type": (
        "value(s) are not finite numbers",
        "numeric (declared in dataset.columns) or a declared missing marker",
    ),
    "range": ("value(s) outside the declared range", "{range}"),
    "categories": ("value(s) outside the declared categories", "one of {categories}"),
    "boolean": ("value(s) are not booleans", "one of true_values {true} or false_values {false}"),
    "datetime": ("value(s) are not dates", "dates in format {format}"),
    "label_values": ("label value(s) outside label_values", "one of {label_values}"),
    "missing": ("missing value(s) in the {role}", "every row to have a {role}"),
    "bins": ("value(s) fall in none of the declared bins", "values within the bin edges {edges}"),
}


def _range_text(spec: ColumnSpec) -> str:
    low = "-inf" if spec.min is None else f"{spec.min:g}"
    high = "inf" if spec.max is None else f"{spec.max:g}"
    return f"values in [{low}, {high}] (dataset.columns min/max)"


def _column_checks(name: str, spec: ColumnSpec, schema: DatasetConfig) -> list[pa.Check]:
    markers = schema.missing_values
    checks = []

    def check(check_name: str, passes) -> None:
        checks.append(pa.Check(passes, name=check_name, ignore_na=False))

    role = (
        "label"
        if name == schema.label
        else ("sensitive feature" if name in schema.sensitive_features else None)
    )
    if role:
        check("missing", lambda s: pd.Series(~missing_mask(s, markers), index=s.index))
    if spec.type == ColumnType.numeric:
        check("type", lambda s: pd.Series(~parse_numeric(s, markers)[1], index=s.index))
        if spec.min is not None or spec.max is not None:
            low = -np.inf if spec.min is None else spec.min
            high = np.inf if spec.max is None else spec.max

            def _declared_range(s: pd.Series) -> pd.Series:
                values = parse_numeric(s, markers)[0]
                return pd.Series(np.isnan(values) | ((values >= low) & (values <= high)), index=s.index)

            check("range", _declared_range)
        if name in schema.bins:
            bins = schema.bins[name]
            check(
                "bins",
                lambda s: pd.Series(
                    ~bin_labels(parse_numeric(s, markers)[0], bins.edges, bins.labels)[1], index=s.index
                ),
            )
    elif spec.type == ColumnType.boolean:
        check(
            "boolean",
            lambda s: pd.Series(
                ~parse_boolean(s, markers, spec.true_values, spec.false_values)[1], index=s.index
            ),
        )
    elif spec.type == ColumnType.datetime:
        check("datetime", lambda s: pd.Series(~parse_datetime(s, markers, spec.format)[1], index=s.index))
    elif name == schema.label:
        check(
            "label_values",
            lambda s: pd.Series(
                missing_mask(s, markers) | as_text(s).isin(schema.label_values).fillna(False).to_numpy(bool),
                index=s.index,
            ),
        )
    elif spec.categories is not None:
        allowed = list(spec.categories)
        check(
            "categories",
            lambda s: pd.Series(
                missing_mask(s, markers) | as_text(s).isin(allowed).fillna(False).to_numpy(bool),
                index=s.index,
            ),
        )
    return checks


def build_schema(schema: DatasetConfig) -> pa.DataFrameSchema:
    """The declaration as a pandera schema over raw cells (strings from CSV, typed from
    Parquet): strict, so undeclared columns fail; every declared column required."""
    return pa.DataFrameSchema(
        {
            name: pa.Column(
                checks=_column_checks(name, spec, schema), nullable=True, coerce=False, required=True
            )
            for name, spec in schema.columns.items()
        },
        strict=True,
        unique_column_names=True,
    )


def _expected(check: str, column: str, schema: DatasetConfig) -> str:
    spec = schema.columns.get(column)
    role = "label" if column == schema.label else "sensitive feature"
    fields = {
        "role": role,
        "range": _range_text(spec) if spec else "",
        "categories": spec.categories if spec else None,
        "true": spec.true_values if spec else None,
        "false": spec.false_values if spec else None,
        "format": (spec.format or "ISO 8601") if spec else "",
        "label_values": schema.label_values,
        "edges": schema.bins[column].edges if column in schema.bins else None,
    }
    message, expected = _CHECK_TEXT[check]
    return message.format(**fields), expected.format(**fields)


# ---- chunked validation ---------------------------------------------------------------------


class TableValidator:
    """Validate a table fed in chunks; ``finish`` returns the report of the whole table."""

    def __init__(
        self,
        schema: DatasetConfig,
        source: str,
        settings: ValidateConfig | None = None,
        *,
        parquet_source: bool = False,
    ) -> None:
        self.schema = schema
        self.source = source
        self.settings = settings or ValidateConfig(missing_warning_share=MISSING_WARNING_SHARE)
        self.parquet_source = parquet_source
        self.pandera_schema = build_schema(schema)
        self.rows = 0
        self.columns: list[str] | None = None
        self.errors: dict[tuple, Problem] = {}
        self.warnings: list[Problem] = []
        self.missing_counts: dict[str, int] = {}
        self.label_counts: dict[str, int] = {}
        self.group_counts: dict[str, dict[str, int]] = {}
        self.swallowed_lines = 0  # lines lost inside unterminated quotes

    # -- problems accumulate by (column, check) across chunks
    def _add(
        self, column: str | None, check: str, message: str, values=None, index=None, expected="", count=0
    ):
        key = (column, check)
        problem = self.errors.get(key)
        if problem is None:
            problem = self.errors[key] = Problem(column, check, message, expected=expected)
        problem.count += count or (0 if values is None else len(values))
        if values is None:
            return
        rows = list(index) if index is not None else None
        for position, value in enumerate(values):
            if len(problem.examples) >= MAX_EXAMPLES:
                break
            text = str(value)
            if text in problem.examples:
                continue  # one example per distinct value ...
            problem.examples.append(text)
            if rows is not None:
                # ... with the line it was first seen on, so lines[i] belongs to examples[i].
                # Data row i sits on line i + 2 of a CSV with a header (lines count from 1).
                problem.lines.append(int(rows[position]) + 2)

    def add_error(self, problem: Problem) -> None:
        self.errors[(problem.column, problem.check)] = problem

    def add_invalid_row(self, line: int | None, why: str, text: str) -> None:
        """A CSV row the reader skipped: too few or too many fields, or an unterminated quote."""
        check = UNTERMINATED_QUOTE if "quote" in why else FIELD_COUNT
        key = (None, check)
        problem = self.errors.setdefault(
            key,
            Problem(
                None,
                check,
                f"row(s) that do not parse: {why}",
                expected=f"{len(self.schema.columns)} comma-separated fields per row, quotes closed",
            ),
        )
        # An unterminated quote swallows the lines after it (up to the end of pyarrow's read
        # block): they arrive in ``text`` and are lost with the row, so count and say so.
        first, *swallowed = text.rstrip("\r\n").split("\n")
        problem.count += 1 + len(swallowed)
        if swallowed:
            self.swallowed_lines += len(swallowed)
            problem.message = (
                f"row(s) that do not parse: {why}; the open quote also swallowed the "
                f"{self.swallowed_lines} line(s) after it, which were not read or checked "
                "(count includes them)"
            )
        if len(problem.examples) < MAX_EXAMPLES:
            problem.examples.append(first[:200])
            if line is not None:
                problem.lines.append(int(line))

    def feed(self, chunk: pd.DataFrame, first_row: int = 0) -> pd.DataFrame | None:
        """Check one chunk (rows ``first_row`` onwards); return its cleaned copy, or None when
        the columns do not match the declaration (nothing can be cleaned then)."""
        chunk = chunk.set_axis(pd.RangeIndex(first_row, first_row + len(chunk)), axis=0)
        if self.columns is None:
            self.columns = [str(c) for c in chunk.columns]
        self.rows += len(chunk)
        declared = list(self.schema.columns)
        if self.parquet_source:
            self._check_stored_types(chunk)
        try:
            self.pandera_schema.validate(chunk, lazy=True)
        except pa.errors.SchemaErrors as error:
            self._collect(error.failure_cases)
        present = [c for c in declared if c in chunk.columns]
        self._aggregate(chunk, present)
        if len(present) < len(declared):
            return None
        return clean_table(chunk, self.schema)

    def _check_stored_types(self, chunk: pd.DataFrame) -> None:
        # A Parquet file has real types: a numeric column stored as text is an error even when
        # the text parses (it hides a broken export upstream).
        for name in self.schema.numeric_features:
            if name not in chunk.columns:
                continue
            if pd.api.types.is_string_dtype(chunk[name]) or chunk[name].dtype == object:
                self._add(
                    name,
                    "stored_as_string",
                    "numbers stored as strings in the Parquet file",
                    values=chunk[name].head(MAX_EXAMPLES).tolist(),
                    count=len(chunk),
                    expected="a numeric Parquet type (int or float) for a numeric column",
                )

    def _collect(self, cases: pd.DataFrame) -> None:
        for check, group in cases.groupby("check", sort=False, dropna=False):
            if check in ("column_in_dataframe", "column_in_schema", "dataframe_column_labels_unique"):
                names = [str(v) for v in group["failure_case"]]
                if check == "column_in_dataframe":
                    self._add(
                        None,
                        "missing_columns",
                        f"declared columns absent from the file: {names}",
                        count=len(names),
                        expected=f"all of {list(self.schema.columns)}",
                    )
                elif check == "column_in_schema":
                    self._add(
                        None,
                        "unexpected_columns",
                        f"columns in the file that are not declared in dataset.columns: {names}",
                        count=len(names),
                        expected="declare them (and list them under dataset.drop to ignore them)",
                    )
                else:
                    self._add(None, "duplicate_columns", f"duplicate column names: {sorted(set(names))}")
                continue
            for column, cells in group.groupby("column", sort=False):
                if str(check) not in _CHECK_TEXT:
                    self._add(
                        str(column), str(check), f"pandera check {check} failed", values=cells["failure_case"]
                    )
                    continue
                message, expected = _expected(str(check), str(column), self.schema)
                # Keep values and row numbers paired: examples are drawn from located cells only.
                index = pd.to_numeric(cells["index"], errors="coerce")
                located = index.notna().to_numpy()
                self._add(
                    str(column),
                    str(check),
                    message,
                    values=cells["failure_case"][located] if located.any() else cells["failure_case"],
                    index=index[located].astype(int) if located.any() else None,
                    expected=expected,
                    count=len(cells),
                )

    def _aggregate(self, chunk: pd.DataFrame, present: list[str]) -> None:
        schema = self.schema
        markers = schema.missing_values
        for name in present:
            self.missing_counts[name] = self.missing_counts.get(name, 0) + int(
                missing_mask(chunk[name], markers).sum()
            )
        if schema.label in present:
            labels = as_text(chunk[schema.label])[~missing_mask(chunk[schema.label], markers)]
            for value, n in labels.value_counts().items():
                self.label_counts[str(value)] = self.label_counts.get(str(value), 0) + int(n)
        for feature in schema.sensitive_features:
            if feature not in present:
                continue
            groups = sensitive_groups(chunk[feature], feature, schema).dropna()
            counts = self.group_counts.setdefault(feature, {})
            for value, n in groups.value_counts().items():
                counts[str(value)] = counts.get(str(value), 0) + int(n)

    def finish(self) -> ValidationReport:
        schema, settings = self.schema, self.settings
        report = ValidationReport(source=self.source, rows=self.rows, columns=self.columns or [])
        # No rows is only its own problem when the file was read to the end: after a read
        # failure ("readable", e.g. an empty file) or an abort, the cause is already reported.
        cause_known = any(check in ("readable", "aborted") for _, check in self.errors)
        if self.rows == 0 and not cause_known:
            report.errors.append(
                Problem(None, "empty", "the table has a header but no rows", expected="at least one data row")
            )
        report.errors += list(self.errors.values())
        observed = {v for v in self.label_counts if v in schema.label_values}
        if self.label_counts and len(observed) < 2:
            report.errors.append(
                Problem(
                    schema.label,
                    "single_class",
                    f"the label has a single class: {sorted(observed)}",
                    expected=f"both of {schema.label_values} to train a binary classifier",
                )
            )
        for feature, counts in self.group_counts.items():
            small = {g: n for g, n in sorted(counts.items()) if n < settings.min_group_rows}
            if small:
                problem = Problem(
                    feature,
                    "small_group",
                    f"group(s) too small to audit: {small} (rows per group)",
                    count=len(small),
                    examples=list(small),
                    expected=f"at least {settings.min_group_rows} rows per group (validate.min_group_rows); "
                    "merge rare groups or set validate.small_group: warn",
                )
                (report.errors if settings.small_group == "error" else report.warnings).append(problem)
        for name, count in self.missing_counts.items():
            role_column = name == schema.label or name in schema.sensitive_features
            if not count or role_column or name in schema.drop or not self.rows:
                continue
            if count / self.rows > settings.missing_warning_share:
                report.warnings.append(
                    Problem(
                        name,
                        "missing_share",
                        f"{count} missing value(s) ({count / self.rows:.1%} of rows); "
                        "they are imputed in prepare",
                        count=count,
                        expected=f"at most {settings.missing_warning_share:.0%} missing "
                        "(validate.missing_warning_share)",
                    )
                )
        report.warnings += self.warnings
        return report


def validate_table(
    frame: pd.DataFrame, schema: DatasetConfig, source: str, settings: ValidateConfig | None = None
) -> ValidationReport:
    """Return a report of every mismatch between ``frame`` and ``schema``; never raises on data."""
    validator = TableValidator(schema, source, settings)
    validator.feed(frame)
    return validator.finish()


# ---- typed copy -----------------------------------------------------------------------------


def sensitive_groups(series: pd.Series, feature: str, schema: DatasetConfig) -> pd.Series:
    """Group label of each row for one sensitive feature: its bin for a binned numeric
    feature, the stripped text otherwise (NA where missing)."""
    if feature in schema.bins:
        bins = schema.bins[feature]
        groups, _ = bin_labels(parse_numeric(series, schema.missing_values)[0], bins.edges, bins.labels)
        return groups.set_axis(series.index)
    if schema.columns[feature].type == ColumnType.boolean:
        spec = schema.columns[feature]
        values, _ = parse_boolean(series, schema.missing_values, spec.true_values, spec.false_values)
        text = np.where(values == 1.0, "true", np.where(values == 0.0, "false", None))
        return pd.Series(text, index=series.index, dtype="string")
    return as_text(series).mask(missing_mask(series, schema.missing_values))


def clean_table(frame: pd.DataFrame, schema: DatasetConfig) -> pd.DataFrame:
    """Typed copy of a validated table: numerics float64 (missing → NaN), categoricals stripped
    strings (missing → NA), booleans nullable booleans, datetimes datetime64[ns] (missing →
    NaT). Columns keep the declared order."""
    out = {}
    markers = schema.missing_values
    for column, spec in schema.columns.items():
        series = frame[column]
        if spec.type == ColumnType.numeric:
            out[column] = pd.Series(parse_numeric(series, markers)[0], index=frame.index)
        elif spec.type == ColumnType.boolean:
            values, _ = parse_boolean(series, markers, spec.true_values, spec.false_values)
            out[column] = pd.Series(
                pd.array(np.where(np.isnan(values), None, values == 1.0), dtype="boolean"), index=frame.index
            )
        elif spec.type == ColumnType.datetime:
            out[column] = parse_datetime(series, markers, spec.format)[0].set_axis(frame.index)
        else:
            out[column] = as_text(series).mask(missing_mask(series, markers)).astype("string")
    return pd.DataFrame(out, index=frame.index)


def add_group_columns(frame: pd.DataFrame, schema: DatasetConfig) -> pd.DataFrame:
    """Add ``<feature>_group`` (the bin label) for every binned sensitive feature."""
    if not schema.bins:
        return frame
    extra = {
        schema.group_column(f): sensitive_groups(frame[f], f, schema).to_numpy()
        for f in schema.sensitive_features
        if f in schema.bins
    }
    return frame.assign(**{k: pd.array(v, dtype="string") for k, v in extra.items()})
