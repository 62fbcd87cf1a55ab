"""Adding a checked batch to the training data, so that retraining learns from it."""

from __future__ import annotations

import gzip
import logging
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fairtrain.config import ColumnSpec, ColumnType, DatasetConfig, ValidateConfig
from fairtrain.data.batch_ledger import ledger_entries, ledger_path
from fairtrain.data.file_check import check_file
from fairtrain.data.loading import CSV_SUFFIXES, PARQUET_SUFFIXES, is_csv, read_raw_table, require_file
from fairtrain.data.parsing import as_text, missing_mask, parse_boolean, parse_datetime, parse_numeric
from fairtrain.data.validation import MAX_EXAMPLES, TableValidator
from fairtrain.errors import DataValidationError
from fairtrain.io import file_sha256, json_text, replaced_together
from fairtrain.monitoring.drift import load_batch

log = logging.getLogger(__name__)

_INTEGER = re.compile(r"[+-]?\d+")
_INTEGER_WITH_POINT = re.compile(r"[+-]?\d+\.0+")


def append_batch(
    dataset_path: str | Path,
    batch_path: str | Path,
    schema: DatasetConfig,
    settings: ValidateConfig | None = None,
) -> int:
    """Append the batch's rows to the dataset file; returns the new row count. A batch whose
    bytes were appended before (see ``ledger_path``) is refused with BatchAlreadyAppended.

    The batch is validated against the schema first (a bad batch changes nothing). Its rows are
    written in the dataset file's own format and conventions: a CSV batch appended to a CSV
    dataset goes in exactly as written; a Parquet batch appended to a CSV dataset is written as
    text (missing values as the first of ``dataset.missing_values``, whole numbers without
    ".0" unless the file writes them so); a CSV batch appended to a Parquet dataset is parsed
    like validate parses it and cast to the dataset's column types. The merged file is then
    validated as the validate stage will (``settings``: ``params.validation``) before it
    atomically replaces the dataset, so a merge that would fail validation never lands.
    """
    dataset_path, batch_path = Path(dataset_path), Path(batch_path)
    settings = settings or ValidateConfig()
    if not dataset_path.name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
        raise DataValidationError(
            f"{dataset_path}: cannot append to this file type; "
            f"expected one of {CSV_SUFFIXES + PARQUET_SUFFIXES}"
        )
    if not dataset_path.is_file():
        raise DataValidationError(f"{dataset_path}: file not found (dataset.path in params.yaml)")
    # Before its bytes are hashed for the ledger: an absent or unreadable batch is the user's
    # mistake, to be named, not an OSError's traceback.
    require_file(batch_path, "a CSV or Parquet batch file like dataset.path")
    try:
        digest = file_sha256(batch_path)
    except OSError as error:
        raise DataValidationError(f"{batch_path}: cannot read the batch: {error}") from None
    recorded = ledger_entries(dataset_path)
    earlier = next((entry for entry in recorded if entry["sha256"] == digest), None)
    if earlier is not None:
        raise BatchAlreadyAppended(
            f"{batch_path}: this batch was already appended to {dataset_path} "
            f"({earlier['rows']} rows from {earlier['file']}, {earlier['appended_at']}; "
            f"sha256 {earlier['sha256'][:12]}, recorded in {ledger_path(dataset_path)})"
        )
    load_batch(batch_path, schema, settings)  # raises naming the column and values
    batch = read_raw_table(batch_path)
    write: Callable[[Path], None]
    if is_csv(dataset_path):
        current = read_raw_table(dataset_path)
        columns = _same_columns(list(current.columns), batch, dataset_path, batch_path)
        batch = batch[columns]
        if not is_csv(batch_path):  # typed values: render them as this file writes them
            batch = _as_csv_text(batch, current, schema, dataset_path, batch_path)
        merged = pd.concat([current, batch], ignore_index=True)
        text = merged.to_csv(index=False)
        if dataset_path.name.lower().endswith(".gz"):

            def write(tmp: Path) -> None:
                # No time and no (temporary) file name in the header: the same rows give the
                # same bytes, so DVC sees no change on a rerun.
                with (
                    open(tmp, "wb") as raw,
                    gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
                ):
                    gz.write(text.encode("utf-8"))

        else:

            def write(tmp: Path) -> None:
                tmp.write_text(text, encoding="utf-8", newline="")

        before, total = len(current), len(merged)
    else:
        table = _read_parquet(dataset_path)
        _same_columns(table.column_names, batch, dataset_path, batch_path)
        appended = _as_parquet_rows(batch, table, schema, dataset_path, batch_path)
        merged_table = pa.concat_tables([table, appended])

        def write(tmp: Path) -> None:
            pq.write_table(merged_table, tmp)

        before, total = table.num_rows, merged_table.num_rows
    # The rows and their ledger entry land together. Staged first, the ledger is renamed into
    # place last: a failure between the two renames leaves rows not yet in the ledger (a
    # rerun refuses nothing), never a ledger entry for rows that were not appended.
    with replaced_together() as staged:
        ledger = staged.file(ledger_path(dataset_path))
        tmp = staged.file(dataset_path)
        write(tmp)
        _check_merged(tmp, dataset_path, batch_path, schema, settings, before, total)
        entry = {
            "sha256": digest,
            "file": batch_path.name,
            "rows": total - before,
            "appended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        ledger.write_text(json_text({"dataset": dataset_path.name, "batches": [*recorded, entry]}))
    log.info("appended %d rows of %s to %s (%d rows now)", total - before, batch_path, dataset_path, total)
    return total


class BatchAlreadyAppended(DataValidationError):
    """The batch's bytes are in the dataset's ledger: appending it again would duplicate rows."""


def _same_columns(current: list[str], batch: pd.DataFrame, dataset_path: Path, batch_path: Path) -> list[str]:
    """The dataset's column order; refuses a dataset whose columns are not the batch's."""
    if sorted(current) != sorted(batch.columns):
        raise DataValidationError(
            f"cannot append {batch_path} to {dataset_path}: the dataset's columns are not the batch's "
            f"(only in the dataset: {sorted(set(current) - set(batch.columns))}; only in the batch: "
            f"{sorted(set(batch.columns) - set(current))}); expected both to hold the columns "
            "declared under dataset.columns"
        )
    return list(current)


# ---- Parquet batch → CSV dataset ------------------------------------------------------------


def _as_csv_text(
    batch: pd.DataFrame, current: pd.DataFrame, schema: DatasetConfig, dataset_path: Path, batch_path: Path
) -> pd.DataFrame:
    """Typed batch values as the CSV dataset writes them. Written as pandas would write them,
    a missing value became an empty cell and 48 became "48.0", and the merged file then
    failed validation (an empty cell is not a number and not a declared missing marker)."""
    markers = schema.missing_values
    out = {}
    for column in batch.columns:
        spec, values = schema.columns[column], batch[column]
        if spec.type == ColumnType.numeric:
            numbers = parse_numeric(values, markers)[0]
            point = _writes_point_zero(current[column], markers)
            text = np.array([_number_text(v, point) for v in numbers], dtype=object)
            missing = np.isnan(numbers)
        elif spec.type == ColumnType.boolean:
            flags = parse_boolean(values, markers, spec.true_values, spec.false_values)[0]
            yes, no = _boolean_spelling(current[column], spec, markers)
            text = np.where(flags == 1.0, yes, no).astype(object)
            missing = np.isnan(flags)
        elif spec.type == ColumnType.datetime:
            stamps = parse_datetime(values, markers, spec.format)[0]
            text = _datetime_text(stamps, spec).to_numpy(dtype=object)
            missing = stamps.isna().to_numpy(dtype=bool)
        else:
            text = as_text(values).to_numpy(dtype=object)
            missing = missing_mask(values, markers)
        if missing.any():
            if not markers:
                rows = [int(i) + 2 for i in np.flatnonzero(missing)[:MAX_EXAMPLES]]
                raise DataValidationError(
                    f"cannot append {batch_path} to {dataset_path}: column {column!r} has "
                    f"{int(missing.sum())} missing value(s) (at line(s) {rows} counted as in a CSV with a "
                    "header), and a CSV file can only hold them as a declared marker; expected "
                    "dataset.missing_values to declare one (e.g. ['?'])"
                )
            text[missing] = markers[0]
        out[column] = text
    return pd.DataFrame(out, columns=list(batch.columns))


def _writes_point_zero(existing: pd.Series, markers: list[str]) -> bool:
    """Whether the file writes whole numbers of this column as "48.0" rather than "48"."""
    text = as_text(existing)[~missing_mask(existing, markers)].dropna()
    with_point = int(text.str.fullmatch(_INTEGER_WITH_POINT.pattern).sum())
    return with_point > int(text.str.fullmatch(_INTEGER.pattern).sum())


def _number_text(value: float, point_zero: bool) -> str:
    if np.isnan(value):
        return ""  # replaced by the missing marker
    if float(value).is_integer() and not point_zero:
        return str(int(value))
    return repr(float(value))  # the shortest text that reads back as the same float


def _boolean_spelling(existing: pd.Series, spec: ColumnSpec, markers: list[str]) -> tuple[str, str]:
    """The words the file uses for true and false (its most common ones), else the declared first."""
    flags = parse_boolean(existing, markers, spec.true_values, spec.false_values)[0]
    text = as_text(existing)

    def most_common(mask: np.ndarray, default: str) -> str:
        counts = text[mask].value_counts()
        return str(counts.index[0]) if len(counts) else default

    return most_common(flags == 1.0, spec.true_values[0]), most_common(flags == 0.0, spec.false_values[0])


def _datetime_text(stamps: pd.Series, spec: ColumnSpec) -> pd.Series:
    if spec.format:
        return stamps.dt.strftime(spec.format)
    present = stamps.dropna()
    if (present == present.dt.normalize()).all():
        return stamps.dt.strftime("%Y-%m-%d")  # dates only
    return stamps.map(lambda t: t.isoformat(), na_action="ignore")


# ---- any batch → Parquet dataset ------------------------------------------------------------


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataValidationError(
            f"{path}: unreadable Parquet file (truncated or not Parquet): {error}"
        ) from None


def _as_parquet_rows(
    batch: pd.DataFrame, current: pa.Table, schema: DatasetConfig, dataset_path: Path, batch_path: Path
) -> pa.Table:
    """The batch as rows of the Parquet dataset: each cell parsed as validate parses it (so a
    "?" in a numeric CSV column is missing, not a failed cast) and cast to the dataset's type."""
    markers = schema.missing_values
    arrays = []
    for field in current.schema:
        spec, values = schema.columns[field.name], batch[field.name]
        if spec.type == ColumnType.numeric:
            numbers = parse_numeric(values, markers)[0]
            array = pa.array(numbers, from_pandas=True)  # NaN → null
            present = ~np.isnan(numbers)
            if pa.types.is_integer(field.type):
                bad = present & (numbers != np.floor(numbers))
                _refuse_if(bad, values, field, dataset_path, batch_path, "whole numbers")
        elif spec.type == ColumnType.boolean:
            flags = parse_boolean(values, markers, spec.true_values, spec.false_values)[0]
            array = pa.array(np.where(np.isnan(flags), None, flags == 1.0), type=pa.bool_())
        elif spec.type == ColumnType.datetime:
            array = pa.array(parse_datetime(values, markers, spec.format)[0], from_pandas=True)
        else:
            missing = missing_mask(values, markers)
            text = as_text(values)
            # Missing as null, unless this file writes its missing categories as the marker.
            text = (
                text.mask(missing, markers[0])
                if _holds_marker(current[field.name], markers)
                else text.mask(missing)
            )
            array = pa.array(text, from_pandas=True)
        try:
            arrays.append(array.cast(field.type))  # safe: a value that would change is refused
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            examples = [str(v) for v in values[~missing_mask(values, markers)].unique()[:MAX_EXAMPLES]]
            raise DataValidationError(
                f"cannot append {batch_path} to {dataset_path}: column {field.name!r} of the batch "
                f"(e.g. {examples}) does not convert to the dataset's Parquet type {field.type}: {error}; "
                "expected values of that type (convert the batch or the dataset)"
            ) from None
    return pa.Table.from_arrays(arrays, schema=current.schema)


def _refuse_if(
    bad: np.ndarray, values: pd.Series, field: pa.Field, dataset_path: Path, batch_path: Path, what: str
) -> None:
    if bad.any():
        rows = np.flatnonzero(bad)[:MAX_EXAMPLES]
        raise DataValidationError(
            f"cannot append {batch_path} to {dataset_path}: column {field.name!r} of the batch holds "
            f"{[str(values.iloc[i]) for i in rows]} at line(s) {[int(i) + 2 for i in rows]}, but the "
            f"dataset stores the column as {field.type}; expected {what}"
        )


def _holds_marker(column: pa.ChunkedArray, markers: list[str]) -> bool:
    if not markers or not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    found = pc.any(pc.is_in(pc.utf8_trim_whitespace(column), value_set=pa.array(markers, column.type)))
    return bool(found.as_py()) and column.null_count == 0


# ---- the merged file ------------------------------------------------------------------------


def _check_merged(
    tmp: Path,
    dataset_path: Path,
    batch_path: Path,
    schema: DatasetConfig,
    settings: ValidateConfig,
    before: int,
    total: int,
) -> None:
    """Validate the written file as the validate stage will read it; raise (so the atomic write
    is dropped and the dataset stays as it was) when it would fail there."""
    validator = TableValidator(schema, str(dataset_path), settings, parquet_source=not is_csv(dataset_path))
    with tempfile.TemporaryDirectory(prefix="fairtrain-append-") as folder:
        # The reader picks the format (and gzip) from the name; the temporary file's ends in .tmp.
        view = Path(folder) / dataset_path.name
        view.symlink_to(tmp.resolve())
        report = check_file(validator, view, settings.chunk_rows)
    for problem in report.errors:  # a read error names the file it read: say the dataset's name
        problem.message = problem.message.replace(str(view), str(dataset_path))
    if not report.passed:
        raise DataValidationError(
            f"cannot append {batch_path} to {dataset_path}: the merged table would fail validation "
            f"(the dataset's rows are lines 2-{before + 1}, the batch's {before + 2}-{total + 1}); "
            f"the dataset is left unchanged.\n{report.summary()}"
        )
