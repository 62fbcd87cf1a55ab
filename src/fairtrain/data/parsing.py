"""How a cell is read, in one place: validation, cleaning and the served model all use these,
so what validation accepts is exactly what serving accepts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def as_text(series: pd.Series) -> pd.Series:
    """Cells as stripped strings (NA stays NA); number-like category codes become their text."""
    return series.astype("string").str.strip()


def missing_mask(series: pd.Series, markers: list[str]) -> np.ndarray:
    """True where a cell is missing: NA/None, or one of the declared markers (after stripping)."""
    missing = np.array(series.isna(), dtype=bool)  # a copy: to_numpy() may be read-only
    if not pd.api.types.is_numeric_dtype(series):
        missing |= as_text(series).isin(markers).fillna(False).to_numpy(dtype=bool)
    return missing


def parse_numeric(series: pd.Series, markers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad): float64 values with NaN where missing, and a mask of cells that are present
    but not finite numbers. "inf" or "1e400" count as bad: they parse, but would turn every
    standardised value of the column into inf/NaN."""
    missing = missing_mask(series, markers)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = _arrow_float(series, markers)
        if values is None:
            values = pd.to_numeric(as_text(series), errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
    values = np.where(missing, np.nan, values)
    bad = ~missing & ~np.isfinite(values)
    return values, bad


def _arrow_float(series: pd.Series, markers: list[str]) -> np.ndarray | None:
    """Fast path for text columns: pyarrow's vectorised cast (about 20x pandas.to_numeric on
    Arrow strings). Returns None when any present cell is not a number, so the caller falls
    back to ``pandas.to_numeric`` and the bad cells are found exactly as before."""
    try:
        text = pa.array(series, from_pandas=True)
        if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
            return None
        text = pc.utf8_trim_whitespace(text)
        if markers:
            text = pc.if_else(pc.is_in(text, pa.array(markers, text.type)), pa.scalar(None, text.type), text)
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def parse_boolean(
    series: pd.Series, markers: list[str], true_values: list[str], false_values: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad): 1.0 / 0.0 / NaN where missing, and a mask of cells that are present but
    neither a true nor a false value (compared case-insensitively; real booleans are kept)."""
    if series.dtype == object:  # Python bools with None (a nullable boolean read back)
        series = series.map(lambda v: v if v is None or isinstance(v, str) else str(v))
    missing = missing_mask(series, markers)
    if pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        # "true"/"false" are always understood: they are how a cleaned (typed) boolean reads
        # back as text, whatever the raw file's vocabulary was.
        text = as_text(series).str.lower()
        trues = {v.lower() for v in true_values} | {"true"}
        falses = {v.lower() for v in false_values} | {"false"}
        values = np.where(
            text.isin(trues).fillna(False).to_numpy(dtype=bool),
            1.0,
            np.where(text.isin(falses).fillna(False).to_numpy(dtype=bool), 0.0, np.nan),
        )
    values = np.where(missing, np.nan, values)
    return values, ~missing & np.isnan(values)


def parse_datetime(series: pd.Series, markers: list[str], fmt: str | None) -> tuple[pd.Series, np.ndarray]:
    """(values, bad): naive datetime64 values (NaT where missing) and a mask of cells that are
    present but not dates in ``fmt`` (ISO 8601 when no format is declared)."""
    missing = missing_mask(series, markers)
    if pd.api.types.is_datetime64_any_dtype(series):
        values = series
    else:
        text = as_text(series)
        try:
            values = pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce")
        except ValueError:  # mixed UTC offsets: compare them in UTC
            values = pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce", utc=True)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    values = values.astype("datetime64[ns]").mask(missing)
    return values, ~missing & values.isna().to_numpy(dtype=bool)


def datetime_parts(values: pd.Series, parts: list[str]) -> dict[str, np.ndarray]:
    """Numeric features of a datetime column (NaN where missing); ``ordinal`` counts days
    since 1970-01-01."""
    out = {}
    for part in parts:
        if part == "ordinal":
            days = (values - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
            out[part] = days.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[part] = getattr(values.dt, part).to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def bin_labels(values: np.ndarray, edges: list[float], labels: list[str]) -> tuple[pd.Series, np.ndarray]:
    """(groups, outside): the bin label of each value (``labels[i]`` covers
    ``[edges[i], edges[i+1])``, the last bin includes its upper edge; NA where missing) and a
    mask of present values that fall in no bin."""
    values = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(np.asarray(edges), values, side="right") - 1
    index = np.where(values == edges[-1], len(labels) - 1, index)
    present = ~np.isnan(values)
    inside = present & (index >= 0) & (index < len(labels))
    names = np.asarray(labels, dtype=object)[np.clip(index, 0, len(labels) - 1)]
    groups = pd.Series(np.where(inside, names, None), dtype="string")
    return groups, present & ~inside
