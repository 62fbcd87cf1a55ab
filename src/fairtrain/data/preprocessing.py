"""Feature preprocessing fitted on the training split and stored as JSON (never pickle).

Numerics: optional log1p, median imputation, standardisation. Categoricals: one-hot over the
training vocabulary, with one shared slot for rare or unseen categories and one for missing
values, so a served model never crashes on a category it has not seen.

The same object turns raw rows (strings, missing markers) into the model's input matrix at
serving time, which is why it also knows the missing-value markers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from fairtrain.config import DatasetConfig, PrepareConfig
from fairtrain.data.parsing import as_text, missing_mask, parse_numeric
from fairtrain.errors import DataValidationError

OTHER = "<other>"
MISSING = "<missing>"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class NumericState:
    log1p: bool
    median: float
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalState:
    categories: list[str]  # one-hot slots in order; the last two are OTHER and MISSING


@dataclass
class Preprocessor:
    numeric: dict[str, NumericState]
    categorical: dict[str, CategoricalState]
    missing_values: list[str] = field(default_factory=list)

    @property
    def input_columns(self) -> list[str]:
        return list(self.numeric) + list(self.categorical)

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for column, state in self.categorical.items():
            names += [f"{column}={value}" for value in state.categories]
        return names

    @property
    def feature_groups(self) -> dict[str, list[int]]:
        """Original column → indices of its model features (one-hot columns of a categorical)."""
        groups: dict[str, list[int]] = {}
        offset = 0
        for column in self.numeric:
            groups[column] = [offset]
            offset += 1
        for column, state in self.categorical.items():
            groups[column] = list(range(offset, offset + len(state.categories)))
            offset += len(state.categories)
        return groups

    @property
    def n_features(self) -> int:
        return len(self.numeric) + sum(len(s.categories) for s in self.categorical.values())

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw or cleaned rows → float32 matrix of shape (rows, n_features)."""
        absent = [c for c in self.input_columns if c not in frame.columns]
        if absent:
            raise DataValidationError(
                f"input is missing column(s) {absent}; expected columns {self.input_columns}"
            )
        out = np.zeros((len(frame), self.n_features), dtype=np.float32)
        groups = self.feature_groups
        for column, state in self.numeric.items():
            values = _as_numeric(frame[column], column, self.missing_values)
            if state.log1p:
                values = np.log1p(np.clip(values, 0, None))
            values = np.where(np.isnan(values), state.median, values)
            out[:, groups[column][0]] = (values - state.mean) / state.std
        for column, state in self.categorical.items():
            codes = _category_codes(frame[column], state.categories, self.missing_values)
            out[np.arange(len(frame)), np.asarray(groups[column])[codes]] = 1.0
        return out

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "missing_values": self.missing_values,
            "numeric": {c: asdict(s) for c, s in self.numeric.items()},
            "categorical": {c: asdict(s) for c, s in self.categorical.items()},
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, payload: dict) -> Preprocessor:
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"preprocessor format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        return cls(
            numeric={c: NumericState(**s) for c, s in payload["numeric"].items()},
            categorical={c: CategoricalState(**s) for c, s in payload["categorical"].items()},
            missing_values=list(payload.get("missing_values", [])),
        )


def target_vector(frame: pd.DataFrame, schema: DatasetConfig) -> np.ndarray:
    """The label as float32 0/1: 1 for the declared positive class."""
    return (frame[schema.label] == schema.positive_class).to_numpy(np.float32)


def fit_preprocessor(train: pd.DataFrame, schema: DatasetConfig, params: PrepareConfig) -> Preprocessor:
    """Fit on the training split only, so nothing about val/test leaks into the features."""
    numeric = {}
    for column in schema.numeric_features:
        values = train[column].to_numpy(dtype=np.float64)
        log = column in params.log_transform
        if log:
            values = np.log1p(np.clip(values, 0, None))
        present = values[~np.isnan(values)]
        if present.size == 0:
            raise DataValidationError(f"column {column!r}: every training value is missing")
        median = float(np.median(present))
        filled = np.where(np.isnan(values), median, values)
        std = float(filled.std())
        # A constant column would divide by zero; scale 1 keeps it a harmless zero feature.
        numeric[column] = NumericState(
            log1p=log, median=median, mean=float(filled.mean()), std=std if std > 1e-12 else 1.0
        )
    categorical = {}
    for column in schema.categorical_features:
        counts = train[column].dropna().value_counts()
        kept = counts[counts >= params.min_category_count]
        # Most frequent first, ties by name, so the slot order is deterministic.
        ordered = sorted(kept.index, key=lambda v: (-int(kept[v]), str(v)))
        categorical[column] = CategoricalState(categories=[str(v) for v in ordered] + [OTHER, MISSING])
    return Preprocessor(numeric=numeric, categorical=categorical, missing_values=list(schema.missing_values))


def _as_numeric(series: pd.Series, column: str, markers: list[str]) -> np.ndarray:
    """Numbers (or numeric strings) as float64 with NaN for missing; anything else, including
    infinities, raises naming the column."""
    values, bad = parse_numeric(series, markers)
    if bad.any():
        examples = as_text(series[bad]).unique()[:5].tolist()
        raise DataValidationError(
            f"column {column!r}: {int(bad.sum())} value(s) are not finite numbers, e.g. {examples}"
        )
    return values


def _category_codes(series: pd.Series, categories: list[str], markers: list[str]) -> np.ndarray:
    missing = missing_mask(series, markers)
    known = categories[:-2]
    text = as_text(series)
    # Unknown values become NA first (pandas deprecates building a Categorical from values
    # outside its categories); NA gets code -1, i.e. the OTHER slot.
    codes = pd.Categorical(text.where(text.isin(known)), categories=known).codes.astype(np.int64)
    codes = np.where(codes < 0, len(categories) - 2, codes)  # unseen or rare → OTHER
    return np.where(missing, len(categories) - 1, codes)
