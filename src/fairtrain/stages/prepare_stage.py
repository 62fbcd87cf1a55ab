"""The prepare stage: stratified split and preprocessing fitted on the training split."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fairtrain.config import Params
from fairtrain.data.preprocessing import fit_preprocessor, target_vector
from fairtrain.data.reference_stats import reference_statistics
from fairtrain.data.split import content_sha256, split_dataset
from fairtrain.data.validation import add_group_columns
from fairtrain.io import atomic_directory, file_sha256, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PREPROCESSOR_FILE = "preprocessor.json"


def prepare_stage(
    params: Params,
    validated_path: Path,
    output_dir: Path,
    stats_path: Path,
    reference_path: Path | None = None,
) -> dict:
    """Split, fit preprocessing on train only, and write the splits + preprocessing state."""
    # Binned sensitive features get their group labels in `<feature>_group` (DatasetConfig.group_columns).
    frame = add_group_columns(pd.read_parquet(validated_path), params.dataset)
    splits = split_dataset(frame, params.dataset.label, params.prepare, params.dataset.group_columns)
    preprocessor = fit_preprocessor(splits["train"], params.dataset, params.prepare)
    with atomic_directory(output_dir) as staging:
        for name in SPLITS:
            splits[name].to_parquet(staging / f"{name}.parquet", index=False)
        write_json(staging / PREPROCESSOR_FILE, preprocessor.to_dict())
        file_hashes = {name: file_sha256(staging / f"{name}.parquet") for name in SPLITS}
    schema = params.dataset
    stats = {
        "rows": {name: len(splits[name]) for name in SPLITS},
        # Row-level content hashes: the same validated rows and seed give the same splits.
        "content_sha256": {"input": content_sha256(frame), **{n: content_sha256(splits[n]) for n in SPLITS}},
        "file_sha256": file_hashes,
        "group_columns": schema.group_columns,
        "positive_rate": {name: float(target_vector(splits[name], schema).mean()) for name in SPLITS},
        "n_features": preprocessor.n_features,
        # What this split was made from, for the model card (which must not read params.yaml
        # directly: it would describe the current params, not the ones that made the model).
        "recorded": {
            "dataset_path": schema.path,
            "label": schema.label,
            "positive_class": schema.positive_class,
            "sensitive_features": schema.sensitive_features,
            "numeric_features": schema.numeric_features,
            "categorical_features": schema.categorical_features,
            "boolean_features": schema.boolean_features,
            "datetime_features": schema.datetime_features,
            "bins": {name: spec.model_dump(mode="json") for name, spec in schema.bins.items()},
            "dropped": schema.drop,
            **params.prepare.model_dump(mode="json"),
        },
    }
    write_json(stats_path, stats)
    if reference_path is not None:  # what `fairtrain drift` compares new batches with
        write_json(reference_path, reference_statistics(splits["train"], schema, params.drift.reference))
    log.info("split %s rows into %s; %d model features", len(frame), stats["rows"], preprocessor.n_features)
    return stats
