"""The augment stage: rebalancing of the training split only."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fairtrain.config import Params
from fairtrain.data.augmentation import group_counts, oversample_minority
from fairtrain.io import write_json, write_parquet

log = logging.getLogger(__name__)


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
