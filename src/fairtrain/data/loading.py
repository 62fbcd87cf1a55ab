"""Read a raw table exactly as written, before any type is trusted.

CSV cells are read as strings (no pandas type guessing, no automatic NA parsing) so that
validation sees what is really in the file and can name offending values; Parquet keeps its
own types and is checked against the declared ones.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fairtrain.errors import DataValidationError

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def require_file(path: Path, expected: str = "a CSV or Parquet file") -> None:
    """A missing path or a folder, named as such. The readers serve dataset.path, predict's
    input and retraining's batches alike, so the message does not guess where the path came
    from (it said "dataset.path in params.yaml" for a --batch file)."""
    if path.is_dir():
        raise DataValidationError(f"{path}: is a folder, not a file; expected {expected}")
    if not path.exists():
        raise DataValidationError(f"{path}: file not found; expected {expected}")


def read_raw_table(path: str | Path) -> pd.DataFrame:
    """Load a CSV or Parquet file; unreadable files raise ``DataValidationError`` naming the file."""
    path = Path(path)
    name = path.name.lower()
    require_file(path)
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


def iter_raw_chunks(
    path: str | Path, chunk_rows: int, invalid_rows: list | None = None
) -> Iterator[pd.DataFrame]:
    """Yield the table about ``chunk_rows`` rows at a time, every CSV cell as a string (as
    ``read_raw_table`` reads it); memory stays bounded by the chunk size.

    CSV rows with too few or too many fields are not fatal: they are skipped and appended to
    ``invalid_rows`` (``pyarrow.csv.InvalidRow``: expected/actual field counts, line number,
    text) so the validator can report all of them. Unreadable files raise
    ``DataValidationError``, possibly after some chunks were yielded.
    """
    path = Path(path)
    name = path.name.lower()
    require_file(path)
    if name.endswith(CSV_SUFFIXES):
        yield from _iter_csv(path, chunk_rows, invalid_rows if invalid_rows is not None else [])
    elif name.endswith(PARQUET_SUFFIXES):
        yield from _iter_parquet(path, chunk_rows)
    else:
        raise DataValidationError(
            f"{path}: unsupported file type; expected one of {CSV_SUFFIXES + PARQUET_SUFFIXES}"
        )


def _iter_csv(path: Path, chunk_rows: int, invalid_rows: list) -> Iterator[pd.DataFrame]:
    header = _read_header(path)
    if not header:
        raise DataValidationError(f"{path}: the file is empty (no header, no rows)")
    _reject_duplicates(path, header)

    def skip_and_record(row: pacsv.InvalidRow) -> str:
        invalid_rows.append(row)
        return "skip"

    reader = None
    try:
        # pyarrow reads columnar Arrow strings (far smaller than Python objects), streaming
        # block by block; quoted values may not span lines (so every row has a line number).
        reader = pacsv.open_csv(
            path,
            # Single-threaded: only then does pyarrow know the line number of a bad row.
            read_options=pacsv.ReadOptions(block_size=8 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=skip_and_record, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        pending: list[pa.RecordBatch] = []
        size = 0
        for batch in reader:
            pending.append(batch)
            size += batch.num_rows
            if size >= chunk_rows:
                yield pa.Table.from_batches(pending).to_pandas()
                pending, size = [], 0
        if pending or not size:
            yield pa.Table.from_batches(pending, schema=reader.schema).to_pandas()
    except pa.ArrowInvalid as error:
        text = str(error)
        if "UTF8" in text or "UTF-8" in text:
            line = _first_non_utf8_line(path)
            where = f" on line {line}" if line else ""
            raise DataValidationError(
                f"{path}: not valid UTF-8{where}; re-save the file as UTF-8 ({text})"
            ) from None
        raise DataValidationError(f"{path}: malformed CSV: {text}") from None
    except (OSError, EOFError) as error:
        # A truncated or corrupt .csv.gz (pyarrow: "Truncated compressed stream") or a failing
        # disk: a `readable` problem naming the file, not a traceback.
        raise DataValidationError(
            f"{path}: unreadable file (truncated or corrupt; it could not be read to the end): {error}"
        ) from None
    finally:
        if reader is not None:
            reader.close()


def describe_invalid_row(row: pacsv.InvalidRow) -> str:
    """Why a CSV row was rejected, in words."""
    # An open quote runs on over the following lines (pyarrow hands them over in the row's
    # text, up to the end of its read block), so a row holding a line break is one too.
    if row.text.split("\n", 1)[0].count('"') % 2 or "\n" in row.text:
        return 'an unterminated quote (a field opened with " is never closed)'
    if row.actual_columns < row.expected_columns:
        return f"too few fields ({row.actual_columns} instead of {row.expected_columns})"
    return f"too many fields ({row.actual_columns} instead of {row.expected_columns})"


def _open(path: Path, mode: str, **options):
    """Open a CSV, gunzipping a ``.gz`` one."""
    return (gzip.open if path.name.lower().endswith(".gz") else open)(path, mode, **options)


def csv_file_lines(
    path: Path, data_rows: Iterable[int], skipped: Iterable[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """Where rows of a CSV read by ``iter_raw_chunks`` sit in the file, as line numbers from 1.

    The reader numbers rows from 1 (the header is 1) over the non-empty lines only, and leaves
    the rows it skipped (``skipped``: their reader numbers) out of the table. Data row ``i``
    of the table is therefore on line ``i + 2`` only while no empty line and no skipped row
    came before it. Returns ``{data row: line}`` and ``{skipped reader number: line}``, from
    one pass over the file that stops at the last row asked for; a row not found (a file
    whose lines end in a bare CR) is left out.
    """
    skipped = sorted(set(skipped))
    data_at: dict[int, int] = {}  # reader number -> data row
    for row in set(data_rows):
        number = row + 2
        for gap in skipped:  # each skipped row at or before it moves it one number on
            if gap > number:
                break
            number += 1
        data_at[number] = row
    wanted = set(data_at) | set(skipped)
    rows: dict[int, int] = {}
    skipped_lines: dict[int, int] = {}
    if not wanted:
        return rows, skipped_lines
    last, number = max(wanted), 0
    with _open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.rstrip(b"\r\n"):
                continue  # the reader ignores empty lines
            number += 1
            if number in data_at:
                rows[data_at[number]] = line
            elif number in wanted:
                skipped_lines[number] = line
            if number >= last:
                break
    return rows, skipped_lines


def _read_header(path: Path) -> list[str]:
    try:
        # utf-8-sig drops a byte-order mark, as pyarrow does: otherwise the first name would be
        # "\ufeffzip", miss its forced string type and have its values guessed ("007" → 7).
        with _open(path, "rt", encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError as error:
        raise DataValidationError(_utf8_message(path, error)) from None
    except (OSError, EOFError) as error:
        raise DataValidationError(f"{path}: unreadable file: {error}") from None


def _reject_duplicates(path: Path, header: list[str], where: str = " in the header") -> None:
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataValidationError(f"{path}: duplicate column names{where}: {duplicates}")


def _unreadable_parquet(path: Path, error: Exception) -> DataValidationError:
    return DataValidationError(f"{path}: unreadable Parquet file (truncated or not Parquet): {error}")


def _iter_parquet(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise _unreadable_parquet(path, error) from None
    _reject_duplicates(path, handle.schema_arrow.names, where="")
    try:
        empty = True
        for batch in handle.iter_batches(batch_size=chunk_rows):
            empty = False
            yield batch.to_pandas()
        if empty:
            yield handle.schema_arrow.empty_table().to_pandas()
    except (pa.ArrowInvalid, OSError) as error:
        raise DataValidationError(
            f"{path}: unreadable Parquet file (truncated or corrupt): {error}"
        ) from None


def _parser_message(path: Path, error: Exception) -> str:
    text = str(error).strip()
    hint = ""
    if "EOF inside string" in text or "EOF following escape" in text:
        hint = ' (an unterminated quote: a field opened with " is never closed)'
    elif "Expected" in text and "fields" in text:
        hint = " (a row has more fields than the header)"
    return f"{path}: malformed CSV{hint}: {text}"


def _utf8_message(path: Path, error: UnicodeDecodeError) -> str:
    line = _first_non_utf8_line(path)
    where = f" on line {line}" if line else ""
    byte = error.object[error.start : error.start + 1]
    return f"{path}: not valid UTF-8{where} (byte {byte!r}): {error.reason}; re-save the file as UTF-8"


def _first_non_utf8_line(path: Path) -> int | None:
    try:
        with _open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError):  # a truncated .gz: the message then just has no line
        return None
    return None


def _reject_mangled_duplicate_headers(path: Path, frame: pd.DataFrame | None) -> None:
    # pandas silently renames a repeated header "x" to "x.1"; read the header ourselves to
    # tell a real "x.1" column from a duplicate.
    _reject_duplicates(path, _read_header(path))


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise _unreadable_parquet(path, error) from None
    _reject_duplicates(path, table.column_names, where="")
    return table.to_pandas()
