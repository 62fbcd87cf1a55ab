"""The validate stage: the raw file against the schema declared in params.yaml."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairtrain.config import ColumnType, DatasetConfig, Params
from fairtrain.data.batch_ledger import ledger_entries
from fairtrain.data.file_check import check_file
from fairtrain.data.loading import is_csv
from fairtrain.data.validation import Problem, TableValidator, ValidationReport
from fairtrain.errors import DataValidationError
from fairtrain.io import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

_ARROW_TYPES = {
    ColumnType.numeric: pa.float64(),
    ColumnType.categorical: pa.string(),
    ColumnType.boolean: pa.bool_(),
    ColumnType.datetime: pa.timestamp("ns"),
}


def cleaned_arrow_schema(schema: DatasetConfig) -> pa.Schema:
    """Arrow types of the validated Parquet, fixed by the declaration (not by the first chunk)."""
    return pa.schema([(name, _ARROW_TYPES[spec.type]) for name, spec in schema.columns.items()])


def summary_path_for(report_path: Path) -> Path:
    """The human summary sits beside the JSON report: ``validation.json`` → ``validation.txt``."""
    return report_path.with_suffix(".txt")


def validate_stage(
    params: Params, raw_path: Path, validated_path: Path, report_path: Path
) -> ValidationReport:
    """Check the raw file against ``params.dataset``; write a typed Parquet copy only if it passes.

    The file is read and checked ``validate.chunk_rows`` rows at a time and the typed copy is
    streamed to a temporary file, so memory stays bounded on large tables. The report (JSON and
    a short text summary beside it) is written either way, so a failed run leaves the reason on
    disk; the validated Parquet is only renamed into place when every check passed.
    """
    schema, settings = params.dataset, params.validation
    # The batches retraining appended to this file (their ledger sits beside it), recorded with
    # the report so the model card can say which rows came from them. Read first: a malformed
    # ledger is refused before anything is written.
    appended = ledger_entries(raw_path)
    validator = TableValidator(
        schema,
        str(raw_path),
        settings,
        parquet_source=not is_csv(raw_path),
    )
    arrow_schema = cleaned_arrow_schema(schema)
    report = None
    report_written = False
    try:
        with atomic_path(validated_path) as tmp:
            with pq.ParquetWriter(tmp, arrow_schema) as writer:

                def stream(cleaned: pd.DataFrame) -> None:
                    table = pa.Table.from_pandas(cleaned, schema=arrow_schema, preserve_index=False)
                    writer.write_table(table)

                report = check_file(validator, raw_path, settings.chunk_rows, on_cleaned=stream)
            _write_report(report, report_path, appended)
            report_written = True
            if not report.passed:
                raise DataValidationError(report.summary())
    except BaseException as error:
        if not report_written or report.passed:
            # A crash or an interrupt (SIGTERM arrives as KeyboardInterrupt, see runner.py)
            # before a failed report was written: the rows read so far are not the whole file
            # (or the validated table never reached its place), so the report on disk must say
            # failed and why, never "passed".
            validator.add_error(aborted_problem(error))
            _write_report(validator.finish(), report_path, appended)
        raise
    for warning in report.warnings:
        log.warning("%s", warning.describe())
    log.info("%s: %d rows, %d columns passed validation", raw_path, report.rows, len(report.columns))
    return report


def aborted_problem(error: BaseException) -> Problem:
    """The error recorded when validation stops before the end of the file."""
    if isinstance(error, KeyboardInterrupt):
        why = f"interrupted ({error})" if str(error) else "interrupted"
    else:
        why = f"{type(error).__name__}: {error}"
    return Problem(
        None,
        "aborted",
        f"validation stopped before the end of the file: {why}; the counts cover only the rows read",
        expected="a complete run over the whole file (fix the cause and run validate again)",
    )


def _write_report(report: ValidationReport, report_path: Path, appended: list[dict]) -> None:
    write_json(report_path, {**report.to_dict(), "appended_batches": appended})
    write_text(summary_path_for(report_path), report.summary() + "\n")
