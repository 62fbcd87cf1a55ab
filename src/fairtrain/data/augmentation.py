"""Training-split augmentation. Validation and test splits are never touched."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairtrain.config import AugmentConfig


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
    return combined.iloc[rng.permutation(len(combined))].reset_index(drop=True)


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
