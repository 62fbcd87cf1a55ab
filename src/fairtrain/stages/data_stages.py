"""The data stages: validate → prepare → augment."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fairtrain.config import Params
from fairtrain.data.augmentation import group_counts, oversample_minority
from fairtrain.data.loading import read_raw_table
from fairtrain.data.preprocessing import fit_preprocessor
from fairtrain.data.split import split_dataset
from fairtrain.data.validation import ValidationReport, clean_table, validate_table
from fairtrain.errors import DataValidationError
from fairtrain.io import atomic_directory, write_json, write_parquet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PREPROCESSOR_FILE = "preprocessor.json"


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


def prepare_stage(params: Params, validated_path: Path, output_dir: Path, stats_path: Path) -> dict:
    """Split, fit preprocessing on train only, and write the splits + preprocessing state."""
    frame = pd.read_parquet(validated_path)
    splits = split_dataset(frame, params.dataset.label, params.prepare)
    preprocessor = fit_preprocessor(splits["train"], params.dataset, params.prepare)
    with atomic_directory(output_dir) as staging:
        for name in SPLITS:
            splits[name].to_parquet(staging / f"{name}.parquet", index=False)
        write_json(staging / PREPROCESSOR_FILE, preprocessor.to_dict())
    label = params.dataset.label
    stats = {
        "rows": {name: len(splits[name]) for name in SPLITS},
        "positive_rate": {
            name: float((splits[name][label] == params.dataset.positive_class).mean()) for name in SPLITS
        },
        "n_features": preprocessor.n_features,
    }
    write_json(stats_path, stats)
    log.info("split %s rows into %s; %d model features", len(frame), stats["rows"], preprocessor.n_features)
    return stats


def augment_stage(params: Params, train_path: Path, output_path: Path, report_path: Path) -> dict:
    """Rebalance the training split; validation and test splits are not inputs here at all."""
    train = pd.read_parquet(train_path)
    label, groups = params.dataset.label, params.dataset.sensitive_features
    augmented = oversample_minority(train, label, params.augment)
    report = {
        "method": "random_oversample" if params.augment.minority_ratio > 0 else "none",
        "minority_ratio": params.augment.minority_ratio,
        "rows_before": len(train),
        "rows_after": len(augmented),
        "label_counts_before": {str(k): int(v) for k, v in train[label].value_counts().items()},
        "label_counts_after": {str(k): int(v) for k, v in augmented[label].value_counts().items()},
        "cells_before": group_counts(train, label, groups),
        "cells_after": group_counts(augmented, label, groups),
    }
    write_parquet(output_path, augmented)
    write_json(report_path, report)
    log.info("training rows %d → %d (%s)", len(train), len(augmented), report["method"])
    return report
