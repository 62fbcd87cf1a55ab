"""How a cell is read, in one place: validation, cleaning and the served model all use these,
so what validation accepts is exactly what serving accepts."""

from __future__ import annotations

import numpy as np
import pandas as pd


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
        values = pd.to_numeric(as_text(series), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    values = np.where(missing, np.nan, values)
    bad = ~missing & ~np.isfinite(values)
    return values, bad
