"""Check a whole data file against the declared schema, chunk by chunk, with the problems'
lines being the file's own line numbers. The validate stage and ``append-batch`` (which
checks a merged file before it replaces the dataset) both read files through here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fairtrain.data.loading import csv_file_lines, describe_invalid_row, is_csv, iter_raw_chunks
from fairtrain.data.validation import READER_CHECKS, Problem, TableValidator, ValidationReport
from fairtrain.errors import DataValidationError


def check_file(
    validator: TableValidator,
    path: Path,
    chunk_rows: int,
    on_cleaned: Callable[[pd.DataFrame], None] | None = None,
) -> ValidationReport:
    """Feed every chunk of ``path`` to ``validator`` and return its report. ``on_cleaned``
    gets each chunk's typed copy while no error has been found (the validate stage streams
    them to its Parquet output). A file that cannot be read to the end is a ``readable``
    error in the report, not an exception."""
    first_row = 0
    invalid_rows: list = []
    try:
        for chunk in iter_raw_chunks(path, chunk_rows, invalid_rows):
            cleaned = validator.feed(chunk, first_row)
            first_row += len(chunk)
            if on_cleaned is not None and cleaned is not None and not validator.errors:
                on_cleaned(cleaned)
    except DataValidationError as error:
        validator.add_error(Problem(None, "readable", str(error)))
    for row in invalid_rows:
        validator.add_invalid_row(row.number, describe_invalid_row(row), row.text)
    report = validator.finish()
    if is_csv(path):
        locate_lines(report, path, [row.number for row in invalid_rows])
    return report


def locate_lines(report: ValidationReport, path: Path, skipped: list[int]) -> None:
    """Make every problem's lines the CSV file's line numbers. The validator numbers data
    row i as line i + 2 and the reader numbers the rows it skipped over non-empty lines only;
    both drift from the file after an empty line or a skipped row."""
    problems = [p for p in [*report.errors, *report.warnings] if p.lines]
    if not problems:
        return
    data_rows = {line - 2 for p in problems if p.check not in READER_CHECKS for line in p.lines}
    rows, skipped_lines = csv_file_lines(path, data_rows, skipped)
    for problem in problems:
        if problem.check in READER_CHECKS:
            problem.lines = [skipped_lines.get(number, number) for number in problem.lines]
        else:
            problem.lines = [rows.get(line - 2, line) for line in problem.lines]
