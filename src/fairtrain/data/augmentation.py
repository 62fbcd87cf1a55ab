"""Training-split augmentation. Validation and test splits are never touched.

Steps, in the order ``augment`` applies them (each off by default):

1. group-aware resampling over one sensitive feature (``group_balance``): duplicate rows
   inside each group until every group has the overall positive rate (``label_rate``) or as
   many rows as the largest group (``count``, label mix kept);
2. class rebalancing up to ``minority_ratio``: random duplication of minority rows
   (``random``) or SMOTE-NC interpolation between minority neighbours (``smote``, via
   imbalanced-learn; numerics interpolated, categoricals take the neighbours' majority);
3. Gaussian noise on numeric features (``noise_std`` x each column's std; sensitive features
   are left alone so nobody changes group, and declared min/max are respected).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from fairtrain.config import AugmentConfig, ColumnType, DatasetConfig
from fairtrain.data.validation import add_group_columns
from fairtrain.errors import DataValidationError

log = logging.getLogger(__name__)
_MISSING = "<missing>"


def _shuffle(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def oversample_minority(train: pd.DataFrame, label: str, params: AugmentConfig) -> pd.DataFrame:
    """Randomly duplicate minority-class rows until minority/majority reaches ``minority_ratio``.

    A ratio at or below the current one (or 0) returns the split unchanged. Rows are appended
    after the originals and the result is shuffled with the seed, so it is deterministic.
    """
    counts = train[label].value_counts()
    if params.minority_ratio == 0 or len(counts) < 2:
        return train.reset_index(drop=True)
    minority, majority = counts.idxmin(), counts.idxmax()
    target = round(params.minority_ratio * counts[majority])
    extra = target - int(counts[minority])
    if extra <= 0:
        return train.reset_index(drop=True)
    rng = np.random.default_rng(params.seed)
    pool = np.flatnonzero((train[label] == minority).to_numpy())
    picked = train.iloc[rng.choice(pool, size=extra, replace=True)]
    combined = pd.concat([train, picked], ignore_index=True)
    return _shuffle(combined, rng)


def smote_minority(train: pd.DataFrame, schema: DatasetConfig, params: AugmentConfig) -> pd.DataFrame:
    """Synthesise minority rows by SMOTE-NC until minority/majority reaches ``minority_ratio``.

    Numeric (and datetime) features are interpolated between a minority row and one of its
    ``smote_neighbors`` nearest minority neighbours; categorical and boolean features take the
    most frequent value among the neighbours. Missing numerics are imputed with the median
    before interpolating; dropped columns are left missing in synthetic rows.
    """
    from imblearn.over_sampling import SMOTE, SMOTEN, SMOTENC

    label = schema.label
    counts = train[label].value_counts()
    if params.minority_ratio == 0 or len(counts) < 2:
        return train.reset_index(drop=True)
    minority, majority = counts.idxmin(), counts.idxmax()
    if round(params.minority_ratio * counts[majority]) <= counts[minority]:
        return train.reset_index(drop=True)
    if counts[minority] < 2:
        raise DataValidationError(
            f"augment.rebalance smote: the minority class {minority!r} has {counts[minority]} "
            "training row(s); SMOTE needs at least 2"
        )
    numeric = [
        c
        for c in schema.feature_columns
        if schema.columns[c].type in (ColumnType.numeric, ColumnType.datetime)
    ]
    categorical = [c for c in schema.feature_columns if c not in numeric]
    x = pd.DataFrame(index=train.index)
    for column in numeric:
        if schema.columns[column].type == ColumnType.datetime:
            values = train[column].astype("datetime64[ns]").astype("int64").astype(np.float64)
            values = values.where(train[column].notna())
        else:
            values = train[column].astype(np.float64)
        x[column] = values.fillna(values.median() if values.notna().any() else 0.0)
    for column in categorical:
        x[column] = train[column].astype("string").fillna(_MISSING).astype(object)
    x = x[numeric + categorical]
    k = int(min(params.smote_neighbors, counts[minority] - 1))
    common = {"sampling_strategy": params.minority_ratio, "k_neighbors": k, "random_state": params.seed}
    if numeric and categorical:
        sampler = SMOTENC(categorical_features=list(range(len(numeric), x.shape[1])), **common)
    elif numeric:
        sampler = SMOTE(**common)
    else:
        sampler = SMOTEN(**common)
    x_array = x.to_numpy(dtype=np.float64 if not categorical else object)
    x_res, y_res = sampler.fit_resample(x_array, train[label].astype(str).to_numpy())
    synthetic = pd.DataFrame(x_res[len(train) :], columns=x.columns)
    rows = {}
    for column in train.columns:
        if column == label:
            rows[column] = pd.array(y_res[len(train) :], dtype=train[label].dtype)
        elif column in numeric:
            values = synthetic[column].astype(np.float64)
            if schema.columns[column].type == ColumnType.datetime:
                rows[column] = pd.to_datetime(values.round().astype("int64")).astype(train[column].dtype)
            else:
                rows[column] = values.to_numpy()
        elif column in categorical:
            text = synthetic[column].astype("string").replace(_MISSING, pd.NA)
            if schema.columns[column].type == ColumnType.boolean:
                rows[column] = text.map({"True": True, "False": False, "true": True, "false": False}).astype(
                    "boolean"
                )
            else:
                rows[column] = text.astype(train[column].dtype).to_numpy()
        else:  # dropped columns and derived group columns: recomputed or left missing
            rows[column] = pd.Series([None] * len(synthetic), dtype=train[column].dtype)
    added = pd.DataFrame(rows, columns=train.columns)
    added = add_group_columns(added, schema)
    combined = pd.concat([train, added], ignore_index=True)
    return _shuffle(combined, np.random.default_rng(params.seed))


def balance_groups(train: pd.DataFrame, schema: DatasetConfig, params: AugmentConfig) -> pd.DataFrame:
    """Duplicate rows inside the groups of one sensitive feature (``group_feature``, default
    the first): ``label_rate`` gives every group the overall positive rate, ``count`` gives every
    group as many rows as the largest group (each group's own label mix kept). Only adds rows."""
    if params.group_balance == "none":
        return train.reset_index(drop=True)
    feature = params.group_feature or schema.sensitive_features[0]
    column = schema.group_columns[schema.sensitive_features.index(feature)]
    label, positive = schema.label, schema.positive_class
    rng = np.random.default_rng(params.seed)
    is_positive = (train[label] == positive).to_numpy()
    groups = train[column].astype(str).to_numpy()
    picks = []
    if params.group_balance == "label_rate":
        rate = float(is_positive.mean())
        for group in pd.unique(groups):
            in_group = groups == group
            pos, neg = int((in_group & is_positive).sum()), int((in_group & ~is_positive).sum())
            if pos == 0 or neg == 0 or rate in (0.0, 1.0):
                log.warning("group %s=%s has a single class; its label rate cannot be changed", column, group)
                continue
            if pos / (pos + neg) < rate:  # add positives: p / (p + neg) = rate
                extra, pool = round(rate * neg / (1 - rate)) - pos, in_group & is_positive
            else:  # add negatives: pos / (pos + n) = rate
                extra, pool = round(pos * (1 - rate) / rate) - neg, in_group & ~is_positive
            if extra > 0:
                picks.append(rng.choice(np.flatnonzero(pool), size=extra, replace=True))
    else:  # count
        sizes = pd.Series(groups).value_counts()
        largest = int(sizes.max())
        for group, size in sizes.items():
            extra = largest - int(size)
            if extra > 0:
                picks.append(rng.choice(np.flatnonzero(groups == group), size=extra, replace=True))
    if not picks:
        return train.reset_index(drop=True)
    combined = pd.concat([train, train.iloc[np.concatenate(picks)]], ignore_index=True)
    return _shuffle(combined, rng)


def add_gaussian_noise(train: pd.DataFrame, schema: DatasetConfig, params: AugmentConfig) -> pd.DataFrame:
    """Add N(0, (noise_std x column std)^2) to numeric, non-sensitive features (missing values
    stay missing; values are clipped to the declared min/max)."""
    if params.noise_std == 0:
        return train.reset_index(drop=True)
    rng = np.random.default_rng(params.seed + 1)
    out = train.reset_index(drop=True).copy()
    for column in schema.numeric_features:
        if column in schema.sensitive_features:
            continue
        values = out[column].to_numpy(dtype=np.float64, na_value=np.nan)
        std = float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
        noisy = values + rng.normal(0.0, params.noise_std * std, size=len(values))
        spec = schema.columns[column]
        noisy = np.clip(
            noisy, -np.inf if spec.min is None else spec.min, np.inf if spec.max is None else spec.max
        )
        out[column] = noisy  # NaN + noise stays NaN
    return out


def augment_training(
    train: pd.DataFrame, schema: DatasetConfig, params: AugmentConfig
) -> tuple[pd.DataFrame, list[dict]]:
    """Apply the configured steps in order; return the result and rows before/after each step."""
    steps = []
    frame = train.reset_index(drop=True)
    plan = [
        ("group_balance", params.group_balance != "none", lambda f: balance_groups(f, schema, params)),
        (
            f"rebalance_{params.rebalance}",
            params.minority_ratio > 0,
            (lambda f: smote_minority(f, schema, params))
            if params.rebalance == "smote"
            else (lambda f: oversample_minority(f, schema.label, params)),
        ),
        ("gaussian_noise", params.noise_std > 0, lambda f: add_gaussian_noise(f, schema, params)),
    ]
    for name, enabled, step in plan:
        if not enabled:
            continue
        before = len(frame)
        frame = step(frame)
        steps.append({"step": name, "rows_before": before, "rows_after": len(frame)})
    return frame, steps


def group_counts(frame: pd.DataFrame, label: str, groups: list[str]) -> list[dict]:
    """Rows per label × sensitive-group cell, for the augmentation report."""
    rows = []
    for feature in groups:
        table = frame.groupby([feature, label], observed=True, dropna=False).size()
        rows += [
            {"feature": feature, "group": str(g), "label": str(y), "rows": int(n)}
            for (g, y), n in table.items()
        ]
    return rows
