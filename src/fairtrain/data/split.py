"""Seeded train / validation / test split, stratified on label × sensitive groups."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from fairtrain.config import PrepareConfig

# A stratum smaller than this cannot be spread over three splits reliably; its rows are
# stratified on the label alone instead.
MIN_STRATUM_ROWS = 10


def strata(frame: pd.DataFrame, label: str, groups: list[str]) -> pd.Series:
    """One key per row: label × every sensitive feature, or just the label for rare cells."""
    key = frame[label].astype(str)
    for column in groups:
        key = key + "|" + frame[column].astype(str)
    sizes = key.map(key.value_counts())
    return key.where(sizes >= MIN_STRATUM_ROWS, frame[label].astype(str))


def split_dataset(
    frame: pd.DataFrame, label: str, params: PrepareConfig, groups: list[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Return ``{"train", "val", "test"}`` frames.

    Stratifying on label × sensitive group (not the label alone) keeps every group's share
    and label balance the same in each split, so small groups still have test rows for the
    fairness audit.
    """
    groups = groups or []
    rest, test = train_test_split(
        frame, test_size=params.test_size, stratify=strata(frame, label, groups), random_state=params.seed
    )
    # val_size is a share of the whole table, so rescale it to the remainder.
    val_share = params.val_size / (1.0 - params.test_size)
    train, val = train_test_split(
        rest, test_size=val_share, stratify=strata(rest, label, groups), random_state=params.seed
    )
    return {
        name: part.reset_index(drop=True) for name, part in (("train", train), ("val", val), ("test", test))
    }
