"""The validate stage: the raw file against the schema declared in params.yaml."""

from __future__ import annotations

import logging
from pathlib import Path

from fairtrain.config import Params
from fairtrain.data.loading import read_raw_table
from fairtrain.data.validation import ValidationReport, clean_table, validate_table
from fairtrain.errors import DataValidationError
from fairtrain.io import write_json, write_parquet

log = logging.getLogger(__name__)


def validate_stage(
    params: Params, raw_path: Path, validated_path: Path, report_path: Path
) -> ValidationReport:
    """Check the raw file against ``params.dataset``; write a typed Parquet copy only if it passes.

    The report is written either way, so a failed run leaves the reason on disk.
    """
    try:
        frame = read_raw_table(raw_path)
    except DataValidationError as error:
        write_json(
            report_path,
            {
                "source": str(raw_path),
                "status": "failed",
                "rows": None,
                "error_count": 1,
                "warning_count": 0,
                "errors": [{"column": None, "check": "readable", "message": str(error)}],
                "warnings": [],
            },
        )
        raise
    report = validate_table(frame, params.dataset, source=str(raw_path))
    write_json(report_path, report.to_dict())
    if not report.passed:
        raise DataValidationError(report.summary())
    for warning in report.warnings:
        log.warning("%s", warning.describe())
    write_parquet(validated_path, clean_table(frame, params.dataset))
    log.info("%s: %d rows, %d columns passed validation", raw_path, report.rows, len(report.columns))
    return report
