"""Read a raw table exactly as written, before any type is trusted.

CSV cells are read as strings (no pandas type guessing, no automatic NA parsing) so that
validation sees what is really in the file and can name offending values; Parquet keeps its
own types and is checked against the declared ones.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairtrain.errors import DataValidationError

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_raw_table(path: str | Path) -> pd.DataFrame:
    """Load a CSV or Parquet file; unreadable files raise ``DataValidationError`` naming the file."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise DataValidationError(f"{path}: file not found (dataset.path in params.yaml)")
    if name.endswith(CSV_SUFFIXES):
        return _read_csv(path)
    if name.endswith(PARQUET_SUFFIXES):
        return _read_parquet(path)
    raise DataValidationError(
        f"{path}: unsupported file type; expected one of {CSV_SUFFIXES + PARQUET_SUFFIXES}"
    )


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,  # "NA" or "" are data until the schema says they are missing
            na_values=[],
            encoding="utf-8",
            engine="c",
        )
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path}: the file is empty (no header, no rows)") from None
    except pd.errors.ParserError as error:
        raise DataValidationError(f"{path}: malformed CSV: {error}") from None
    except UnicodeDecodeError as error:
        raise DataValidationError(f"{path}: not valid UTF-8 at byte {error.start}: {error.reason}") from None
    _reject_mangled_duplicate_headers(path, frame)
    return frame


def _reject_mangled_duplicate_headers(path: Path, frame: pd.DataFrame) -> None:
    # pandas silently renames a repeated header "x" to "x.1"; read the header ourselves to
    # tell a real "x.1" column from a duplicate.
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataValidationError(f"{path}: duplicate column names in the header: {duplicates}")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataValidationError(f"{path}: unreadable Parquet file: {error}") from None
    names = table.column_names
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataValidationError(f"{path}: duplicate column names: {duplicates}")
    return table.to_pandas()
