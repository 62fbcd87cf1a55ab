"""Reference statistics of the training split: what a later batch is compared with for drift.

Written by the prepare stage as JSON (no pickle) so the drift check needs neither the training
rows nor the code that made them. Per column:

- numeric: count, missing share, mean/std, 101 quantiles (0 %, 1 %, …, 100 %), quantile bins
  for PSI (interior cut points and the share of training rows in each bin) and a seeded random
  sample of at most ``sample_size`` values for the two-sample KS test;
- categorical and boolean: the share of each value (missing values as ``<missing>``);

plus the positive-label rate overall and within every group of every sensitive feature.
Datetime columns are not described: a later batch is later by nature, so their values
always "drift"; the features derived from them are not columns of the typed table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairtrain.config import DatasetConfig, DriftReferenceConfig
from fairtrain.data.validation import add_group_columns

FORMAT_VERSION = 1
MISSING = "<missing>"
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)


def share_columns(schema: DatasetConfig) -> list[str]:
    """The columns compared by the share of each value: categorical and boolean features."""
    return [*schema.categorical_features, *schema.boolean_features]


def numeric_cut_points(values: np.ndarray, bins: int) -> list[float]:
    """Interior cut points of ``bins`` quantile bins; duplicates (point masses such as the many
    zeros of a mostly-zero money column) collapse, so a column may get fewer bins than asked for."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return []
    cuts = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(c) for c in np.unique(cuts)]


def numeric_bin_shares(values: np.ndarray, cuts: list[float]) -> list[float]:
    """Share of values in each bin (-inf, c1], (c1, c2], …, (ck, inf), then the missing share.
    Shares are of all rows, so a change in missingness shows up in the PSI too."""
    missing = np.isnan(values)
    index = np.searchsorted(np.asarray(cuts, dtype=np.float64), values[~missing], side="left")
    counts = np.bincount(index, minlength=len(cuts) + 1).astype(np.float64)
    counts = np.append(counts, float(missing.sum()))
    total = max(len(values), 1)
    return (counts / total).tolist()


def category_shares(series: pd.Series) -> dict[str, float]:
    """Share of every value, missing values as ``<missing>``; sorted by share, then name."""
    text = series.astype("string").fillna(MISSING)
    counts = text.value_counts()
    total = max(len(series), 1)
    ordered = sorted(counts.index, key=lambda v: (-int(counts[v]), str(v)))
    return {str(v): float(counts[v]) / total for v in ordered}


def label_rates(frame: pd.DataFrame, schema: DatasetConfig) -> dict:
    """Positive-label rate overall and per group of each sensitive feature (with counts)."""
    positive = (frame[schema.label] == schema.positive_class).astype(np.float64)
    groups = {}
    # Binned numeric sensitive features are compared by their bins (``<feature>_group``), as
    # the split and the fairness audit group them, not value by value.
    frame = add_group_columns(frame, schema)
    for feature in schema.group_columns:
        keys = frame[feature].astype("string").fillna(MISSING)
        by_group = positive.groupby(keys.to_numpy())
        groups[feature] = {
            str(g): {"count": int(n), "positive_rate": float(r)}
            for g, n, r in zip(by_group.size().index, by_group.size(), by_group.mean(), strict=True)
        }
    return {"count": len(frame), "positive_rate": float(positive.mean()), "groups": groups}


def reference_statistics(train: pd.DataFrame, schema: DatasetConfig, params: DriftReferenceConfig) -> dict:
    """Summarise the (typed, cleaned) training split; see the module docstring for the shape."""
    rng = np.random.default_rng(params.seed)
    numeric = {}
    for column in schema.numeric_features:
        values = train[column].to_numpy(dtype=np.float64, na_value=np.nan)
        present = values[~np.isnan(values)]
        cuts = numeric_cut_points(values, params.numeric_bins)
        if present.size > params.sample_size:
            sample = rng.choice(present, size=params.sample_size, replace=False)
        else:
            sample = present
        numeric[column] = {
            "count": int(values.size),
            "missing_share": float(np.isnan(values).mean()) if values.size else 0.0,
            "mean": float(present.mean()) if present.size else None,
            "std": float(present.std()) if present.size else None,
            "quantiles": {
                "levels": [round(float(q), 2) for q in QUANTILE_LEVELS],
                "values": np.quantile(present, QUANTILE_LEVELS).tolist() if present.size else [],
            },
            "bins": {"cut_points": cuts, "shares": numeric_bin_shares(values, cuts)},
            "sample": np.sort(sample).tolist(),
        }
    categorical = {
        column: {
            "count": len(train),
            "missing_share": float(train[column].isna().mean()) if len(train) else 0.0,
            "shares": category_shares(train[column]),
        }
        for column in share_columns(schema)
    }
    return {
        "format_version": FORMAT_VERSION,
        "split": "train",
        "rows": len(train),
        "label": schema.label,
        "positive_class": schema.positive_class,
        "sensitive_features": list(schema.sensitive_features),
        "numeric_bins": params.numeric_bins,
        "sample_size": params.sample_size,
        "numeric": numeric,
        "categorical": categorical,
        "labels": label_rates(train, schema),
    }
