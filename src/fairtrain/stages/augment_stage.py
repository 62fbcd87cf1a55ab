"""The augment stage: group-aware resampling, class rebalancing and noise, training split only."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fairtrain.config import Params
from fairtrain.data.augmentation import augment_training, group_counts
from fairtrain.io import write_json, write_parquet

log = logging.getLogger(__name__)


def augment_stage(params: Params, train_path: Path, output_path: Path, report_path: Path) -> dict:
    """Augment the training split; validation and test splits are not inputs here at all.

    The report (a stage metric) gives rows before/after per label × sensitive group.
    """
    train = pd.read_parquet(train_path)
    schema, settings = params.dataset, params.augment
    label, groups = schema.label, schema.group_columns
    augmented, steps = augment_training(train, schema, settings)
    report = {
        "method": "+".join(s["step"] for s in steps) or "none",
        "steps": steps,
        "settings": settings.model_dump(mode="json"),
        "minority_ratio": settings.minority_ratio,
        "rows_before": len(train),
        "rows_after": len(augmented),
        "label_counts_before": {str(k): int(v) for k, v in train[label].value_counts().items()},
        "label_counts_after": {str(k): int(v) for k, v in augmented[label].value_counts().items()},
        "cells_before": group_counts(train, label, groups),
        "cells_after": group_counts(augmented, label, groups),
    }
    # The same counts flat, so `dvc metrics show / diff` lists them as numbers.
    report["rows_by_group_and_label"] = _flat_cells(report["cells_before"], report["cells_after"])
    write_parquet(output_path, augmented)
    write_json(report_path, report)
    log.info("training rows %d → %d (%s)", len(train), len(augmented), report["method"])
    return report


def _flat_cells(before: list[dict], after: list[dict]) -> dict:
    flat: dict[str, dict[str, int]] = {}
    for when, cells in (("before", before), ("after", after)):
        for cell in cells:
            key = f"{cell['feature']}={cell['group']}|label={cell['label']}"
            flat.setdefault(key, {"before": 0, "after": 0})[when] = cell["rows"]
    return flat
