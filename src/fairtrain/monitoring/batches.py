"""Adding a checked batch to the training data, so that retraining learns from it."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pandas as pd

from fairtrain.config import DatasetConfig
from fairtrain.data.loading import read_raw_table
from fairtrain.errors import DataValidationError
from fairtrain.io import atomic_path
from fairtrain.monitoring.drift import load_batch

log = logging.getLogger(__name__)


def append_batch(dataset_path: str | Path, batch_path: str | Path, schema: DatasetConfig) -> int:
    """Append the batch's rows, exactly as written, to the dataset file; returns the new row count.

    The batch is validated against the schema first (a bad batch changes nothing), and the file
    is replaced atomically in its own format (CSV, gzipped CSV or Parquet).
    """
    dataset_path, batch_path = Path(dataset_path), Path(batch_path)
    load_batch(batch_path, schema)  # raises naming the column and values
    current, batch = read_raw_table(dataset_path), read_raw_table(batch_path)
    if list(batch.columns) != list(current.columns):
        batch = batch[list(current.columns)]  # same columns (validation checked), file order
    name = dataset_path.name.lower()
    is_parquet = name.endswith((".parquet", ".pq"))
    if is_parquet and any(current[c].dtype != batch[c].dtype for c in current.columns):
        batch = batch.astype(current.dtypes.to_dict())
    merged = pd.concat([current, batch], ignore_index=True)
    with atomic_path(dataset_path) as tmp:
        if name.endswith(".csv.gz"):
            # No time and no (temporary) file name in the header: the same rows give the same bytes,
            # so DVC sees no change on a rerun.
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                gz.write(merged.to_csv(index=False).encode("utf-8"))
        elif name.endswith(".csv"):
            merged.to_csv(tmp, index=False)
        elif name.endswith((".parquet", ".pq")):
            merged.to_parquet(tmp, index=False)
        else:
            raise DataValidationError(f"{dataset_path}: cannot append to this file type")
    log.info("appended %d rows of %s to %s (%d rows now)", len(batch), batch_path, dataset_path, len(merged))
    return len(merged)
