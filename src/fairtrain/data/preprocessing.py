"""Feature preprocessing fitted on the training split and stored as JSON (never pickle).

Numerics: optional log1p, median imputation, standardisation. Booleans: 0/1, then the same.
Datetimes: the declared parts (year, month, day of week, ordinal day...) as numerics.
Categoricals: one-hot over the
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
from fairtrain.data.parsing import (
    as_text,
    datetime_parts,
    missing_mask,
    parse_boolean,
    parse_datetime,
    parse_numeric,
)
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
class BooleanState:
    true_values: list[str]
    false_values: list[str]
    scale: NumericState


@dataclass(frozen=True)
class DatetimeState:
    format: str | None
    parts: dict[str, NumericState]  # derived feature → its scaling, in feature order


@dataclass(frozen=True)
class CategoricalState:
    categories: list[str]  # one-hot slots in order; the last two are OTHER and MISSING


@dataclass
class Preprocessor:
    numeric: dict[str, NumericState]
    categorical: dict[str, CategoricalState]
    missing_values: list[str] = field(default_factory=list)
    boolean: dict[str, BooleanState] = field(default_factory=dict)
    datetime: dict[str, DatetimeState] = field(default_factory=dict)

    @property
    def input_columns(self) -> list[str]:
        return list(self.numeric) + list(self.boolean) + list(self.datetime) + list(self.categorical)

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric) + list(self.boolean)
        for column, state in self.datetime.items():
            names += [f"{column}.{part}" for part in state.parts]
        for column, state in self.categorical.items():
            names += [f"{column}={value}" for value in state.categories]
        return names

    @property
    def feature_groups(self) -> dict[str, list[int]]:
        """Original column → indices of its model features (one-hot columns of a categorical)."""
        groups: dict[str, list[int]] = {}
        offset = 0
        for column in list(self.numeric) + list(self.boolean):
            groups[column] = [offset]
            offset += 1
        for column, state in self.datetime.items():
            groups[column] = list(range(offset, offset + len(state.parts)))
            offset += len(state.parts)
        for column, state in self.categorical.items():
            groups[column] = list(range(offset, offset + len(state.categories)))
            offset += len(state.categories)
        return groups

    @property
    def n_features(self) -> int:
        return (
            len(self.numeric)
            + len(self.boolean)
            + sum(len(s.parts) for s in self.datetime.values())
            + sum(len(s.categories) for s in self.categorical.values())
        )

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
            out[:, groups[column][0]] = _scaled(values, state)
        for column, state in self.boolean.items():
            values, bad = parse_boolean(
                frame[column], self.missing_values, state.true_values, state.false_values
            )
            _reject_bad(frame[column], column, bad, f"booleans ({state.true_values} / {state.false_values})")
            out[:, groups[column][0]] = _scaled(values, state.scale)
        for column, state in self.datetime.items():
            values, bad = parse_datetime(frame[column], self.missing_values, state.format)
            _reject_bad(frame[column], column, bad, f"dates ({state.format or 'ISO 8601'})")
            derived = datetime_parts(values, list(state.parts))
            for slot, (part, scale) in zip(groups[column], state.parts.items(), strict=True):
                out[:, slot] = _scaled(derived[part], scale)
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
            "boolean": {c: asdict(s) for c, s in self.boolean.items()},
            "datetime": {c: asdict(s) for c, s in self.datetime.items()},
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
            boolean={
                c: BooleanState(s["true_values"], s["false_values"], NumericState(**s["scale"]))
                for c, s in payload.get("boolean", {}).items()
            },
            datetime={
                c: DatetimeState(s["format"], {p: NumericState(**n) for p, n in s["parts"].items()})
                for c, s in payload.get("datetime", {}).items()
            },
        )


def target_vector(frame: pd.DataFrame, schema: DatasetConfig) -> np.ndarray:
    """The label as float32 0/1: 1 for the declared positive class."""
    return (frame[schema.label] == schema.positive_class).to_numpy(np.float32)


def check_log_transform_inputs(frame: pd.DataFrame, columns: list[str]) -> None:
    """Refuse negative values in ``prepare.log_transform`` columns, naming column and values.

    log1p would need them clipped to 0 (-5000, -10 and 0 all one value), silently changing the
    data. Like a declared min/max this is a check of the table before training; transform()
    at serving time still clips, as it applies no declared range either.
    """
    problems = []
    for column in columns:
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        negative = values < 0  # NaN (missing) compares False: imputed later, not refused
        if negative.any():
            examples = [float(v) for v in np.unique(values[negative])[:5]]
            problems.append(f"column {column!r}: {int(negative.sum())} negative value(s), e.g. {examples}")
    if problems:
        raise DataValidationError(
            "; ".join(problems) + "; expected values >= 0 in prepare.log_transform columns (log1p). "
            "Declare min: 0 for them under dataset.columns so validate reports the rows, or remove "
            "them from prepare.log_transform"
        )


def fit_preprocessor(train: pd.DataFrame, schema: DatasetConfig, params: PrepareConfig) -> Preprocessor:
    """Fit on the training split only, so nothing about val/test leaks into the features."""
    check_log_transform_inputs(train, params.log_transform)
    numeric = {}
    for column in schema.numeric_features:
        values = train[column].to_numpy(dtype=np.float64, na_value=np.nan)
        numeric[column] = _fit_scale(values, column, log=column in params.log_transform)
    boolean = {}
    for column in schema.boolean_features:
        spec = schema.columns[column]
        values, _ = parse_boolean(train[column], schema.missing_values, spec.true_values, spec.false_values)
        boolean[column] = BooleanState(
            list(spec.true_values), list(spec.false_values), _fit_scale(values, column)
        )
    datetimes = {}
    for column in schema.datetime_features:
        spec = schema.columns[column]
        values, _ = parse_datetime(train[column], schema.missing_values, spec.format)
        derived = datetime_parts(values, list(spec.derive))
        datetimes[column] = DatetimeState(
            spec.format, {part: _fit_scale(derived[part], f"{column}.{part}") for part in spec.derive}
        )
    categorical = {}
    for column in schema.categorical_features:
        counts = train[column].dropna().value_counts()
        kept = counts[counts >= params.min_category_count]
        # Most frequent first, ties by name, so the slot order is deterministic.
        ordered = sorted(kept.index, key=lambda v: (-int(kept[v]), str(v)))
        categorical[column] = CategoricalState(categories=[str(v) for v in ordered] + [OTHER, MISSING])
    return Preprocessor(
        numeric=numeric,
        categorical=categorical,
        missing_values=list(schema.missing_values),
        boolean=boolean,
        datetime=datetimes,
    )


def _fit_scale(values: np.ndarray, column: str, log: bool = False) -> NumericState:
    if log:  # negatives were refused by check_log_transform_inputs; the clip is a no-op here
        values = np.log1p(np.clip(values, 0, None))
    present = values[~np.isnan(values)]
    if present.size == 0:
        raise DataValidationError(f"column {column!r}: every training value is missing")
    median = float(np.median(present))
    filled = np.where(np.isnan(values), median, values)
    std = float(filled.std())
    # A constant column would divide by zero; scale 1 keeps it a harmless zero feature.
    return NumericState(log1p=log, median=median, mean=float(filled.mean()), std=std if std > 1e-12 else 1.0)


def _scaled(values: np.ndarray, state: NumericState) -> np.ndarray:
    if state.log1p:
        values = np.log1p(np.clip(values, 0, None))
    values = np.where(np.isnan(values), state.median, values)
    return (values - state.mean) / state.std


def _reject_bad(series: pd.Series, column: str, bad: np.ndarray, expected: str) -> None:
    if bad.any():
        examples = as_text(series[bad]).unique()[:5].tolist()
        raise DataValidationError(
            f"column {column!r}: {int(bad.sum())} value(s) are not {expected}, e.g. {examples}"
        )


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
