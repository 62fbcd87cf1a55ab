"""Seeded train / validation / test split, stratified on the label."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from fairtrain.config import PrepareConfig


def split_dataset(frame: pd.DataFrame, label: str, params: PrepareConfig) -> dict[str, pd.DataFrame]:
    """Return ``{"train", "val", "test"}`` frames; the label's class balance is kept in each."""
    rest, test = train_test_split(
        frame, test_size=params.test_size, stratify=frame[label], random_state=params.seed
    )
    # val_size is a share of the whole table, so rescale it to the remainder.
    val_share = params.val_size / (1.0 - params.test_size)
    train, val = train_test_split(rest, test_size=val_share, stratify=rest[label], random_state=params.seed)
    return {
        name: part.reset_index(drop=True) for name, part in (("train", train), ("val", val), ("test", test))
    }
