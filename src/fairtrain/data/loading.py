"""Read a raw table exactly as written, before any type is trusted.

CSV cells are read as strings (no pandas type guessing, no automatic NA parsing) so that
validation sees what is really in the file and can name offending values; Parquet keeps its
own types and is checked against the declared ones.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
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
        raise DataValidationError(_parser_message(path, error)) from None
    except UnicodeDecodeError as error:
        raise DataValidationError(_utf8_message(path, error)) from None
    _reject_mangled_duplicate_headers(path, frame)
    return frame


def is_csv(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(CSV_SUFFIXES)


def iter_raw_chunks(path: str | Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Yield the table ``chunk_rows`` rows at a time, read exactly as ``read_raw_table`` reads
    it; memory stays bounded by the chunk size. Unreadable files raise ``DataValidationError``
    (possibly after some chunks were yielded: a truncated row late in the file)."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise DataValidationError(f"{path}: file not found (dataset.path in params.yaml)")
    if name.endswith(CSV_SUFFIXES):
        yield from _iter_csv(path, chunk_rows)
    elif name.endswith(PARQUET_SUFFIXES):
        yield from _iter_parquet(path, chunk_rows)
    else:
        raise DataValidationError(
            f"{path}: unsupported file type; expected one of {CSV_SUFFIXES + PARQUET_SUFFIXES}"
        )


def _iter_csv(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    _reject_mangled_duplicate_headers(path, None)
    try:
        reader = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[],
            encoding="utf-8",
            engine="c",
            chunksize=chunk_rows,
        )
        with reader:
            yield from reader
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path}: the file is empty (no header, no rows)") from None
    except pd.errors.ParserError as error:
        raise DataValidationError(_parser_message(path, error)) from None
    except UnicodeDecodeError as error:
        raise DataValidationError(_utf8_message(path, error)) from None


def _iter_parquet(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataValidationError(
            f"{path}: unreadable Parquet file (truncated or not Parquet): {error}"
        ) from None
    names = handle.schema_arrow.names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataValidationError(f"{path}: duplicate column names: {duplicates}")
    try:
        empty = True
        for batch in handle.iter_batches(batch_size=chunk_rows):
            empty = False
            yield batch.to_pandas()
        if empty:
            yield handle.schema_arrow.empty_table().to_pandas()
    except (pa.ArrowInvalid, OSError) as error:
        raise DataValidationError(f"{path}: unreadable Parquet file (truncated or corrupt): {error}") from None


def _parser_message(path: Path, error: Exception) -> str:
    text = str(error).strip()
    hint = ""
    if "EOF inside string" in text or "EOF following escape" in text:
        hint = " (an unterminated quote: a field opened with \" is never closed)"
    elif "Expected" in text and "fields" in text:
        hint = " (a row has more fields than the header)"
    return f"{path}: malformed CSV{hint}: {text}"


def _utf8_message(path: Path, error: UnicodeDecodeError) -> str:
    line = _first_non_utf8_line(path)
    where = f" on line {line}" if line else ""
    return f"{path}: not valid UTF-8{where} (byte {error.object[error.start:error.start + 1]!r}): {error.reason}; re-save the file as UTF-8"


def _first_non_utf8_line(path: Path) -> int | None:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _reject_mangled_duplicate_headers(path: Path, frame: pd.DataFrame | None) -> None:
    # pandas silently renames a repeated header "x" to "x.1"; read the header ourselves to
    # tell a real "x.1" column from a duplicate.
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
    except UnicodeDecodeError as error:
        raise DataValidationError(_utf8_message(path, error)) from None
    except (OSError, EOFError) as error:
        raise DataValidationError(f"{path}: unreadable file: {error}") from None
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataValidationError(f"{path}: duplicate column names in the header: {duplicates}")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataValidationError(
            f"{path}: unreadable Parquet file (truncated or not Parquet): {error}"
        ) from None
    names = table.column_names
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataValidationError(f"{path}: duplicate column names: {duplicates}")
    return table.to_pandas()
