"""Seeded train / validation / test split, stratified on label × sensitive groups."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fairtrain.config import PrepareConfig
from fairtrain.errors import DataValidationError

log = logging.getLogger(__name__)

# A stratum smaller than this cannot be spread over three splits reliably; its rows are
# stratified on the label alone instead.
MIN_STRATUM_ROWS = 10
SPLIT_NAMES = ("train", "val", "test")


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
    fairness audit. ``groups`` are the columns holding group labels (binned where declared).
    A group that ends up missing from a split is an error or a warning (prepare.unsplittable_group).
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
    splits = {
        name: part.reset_index(drop=True) for name, part in (("train", train), ("val", val), ("test", test))
    }
    _check_groups_in_every_split(frame, splits, groups, params)
    return splits


def _check_groups_in_every_split(
    frame: pd.DataFrame, splits: dict[str, pd.DataFrame], groups: list[str], params: PrepareConfig
) -> None:
    problems = []
    for column in groups:
        sizes = frame[column].astype(str).value_counts()
        for name in SPLIT_NAMES:
            present = set(splits[name][column].astype(str))
            absent = [g for g in sizes.index if g not in present]
            if absent:
                problems.append(
                    f"{column}: group(s) {absent} have no rows in the {name} split "
                    f"(rows in the table: {[int(sizes[g]) for g in absent]})"
                )
    if not problems:
        return
    message = (
        "sensitive groups that cannot be split over train/val/test: "
        + "; ".join(problems)
        + ". Collect more rows for them, merge them (bins / categories), or set "
        "prepare.unsplittable_group: warn to audit without them"
    )
    if params.unsplittable_group == "error":
        raise DataValidationError(message)
    log.warning("%s", message)


def content_sha256(frame: pd.DataFrame) -> str:
    """Hash of a table's rows in order (values and column names, not the file encoding):
    equal hashes mean the same rows in the same order."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update("\x1f".join(str(t) for t in frame.dtypes).encode())
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    digest.update(rows.tobytes())
    return digest.hexdigest()
