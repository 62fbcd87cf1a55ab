"""The prepare stage: stratified split and preprocessing fitted on the training split."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fairtrain.config import Params
from fairtrain.data.preprocessing import check_log_transform_inputs, fit_preprocessor, target_vector
from fairtrain.data.reference_stats import reference_statistics
from fairtrain.data.split import content_sha256, split_dataset
from fairtrain.data.validation import add_group_columns
from fairtrain.io import file_sha256, replaced_together, write_json

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
    """Split, fit preprocessing on train only, and write the splits + preprocessing state.

    Every payload is computed before anything is written, and the outputs (split folder,
    stats, reference statistics) are staged and only renamed into place once all of them are
    complete: a failure leaves the previous outputs together, never new splits beside old
    reference statistics.
    """
    # Binned sensitive features get their group labels in `<feature>_group` (DatasetConfig.group_columns).
    frame = add_group_columns(pd.read_parquet(validated_path), params.dataset)
    # The whole table, not just train: a negative value in val/test would be clipped unseen.
    check_log_transform_inputs(frame, params.prepare.log_transform)
    splits = split_dataset(frame, params.dataset.label, params.prepare, params.dataset.group_columns)
    preprocessor = fit_preprocessor(splits["train"], params.dataset, params.prepare)
    schema = params.dataset
    # What `fairtrain drift` compares new batches with.
    reference = (
        None
        if reference_path is None
        else reference_statistics(splits["train"], schema, params.drift.reference)
    )
    stats = {
        "rows": {name: len(splits[name]) for name in SPLITS},
        # Row-level content hashes: the same validated rows and seed give the same splits.
        "content_sha256": {"input": content_sha256(frame), **{n: content_sha256(splits[n]) for n in SPLITS}},
        "file_sha256": {},  # filled once the split files are staged (keeps the key order)
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
    with replaced_together() as staged:
        splits_dir = staged.folder(output_dir)
        for name in SPLITS:
            splits[name].to_parquet(splits_dir / f"{name}.parquet", index=False)
        write_json(splits_dir / PREPROCESSOR_FILE, preprocessor.to_dict())
        stats["file_sha256"] = {name: file_sha256(splits_dir / f"{name}.parquet") for name in SPLITS}
        write_json(staged.file(stats_path), stats)
        if reference is not None:
            write_json(staged.file(reference_path), reference)
    log.info("split %s rows into %s; %d model features", len(frame), stats["rows"], preprocessor.n_features)
    return stats
