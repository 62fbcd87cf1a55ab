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


def strata(frame: pd.DataFrame, label: str, groups: list[str]) -> np.ndarray:
    """One integer key per row: label × every sensitive group, or just the label for cells
    smaller than ``MIN_STRATUM_ROWS`` (integer codes: far cheaper than string keys at scale)."""
    keys = [label, *groups]
    cell = frame.groupby(keys, sort=True, dropna=False, observed=True).ngroup().to_numpy()
    label_code = pd.factorize(frame[label], sort=True)[0]
    sizes = np.bincount(cell)
    # Rare cells fall back to their label alone, coded after every real cell.
    key = np.where(sizes[cell] >= MIN_STRATUM_ROWS, cell, len(sizes) + label_code)
    return _fold_single_rows(key, label_code)


def _fold_single_rows(key: np.ndarray, label_code: np.ndarray) -> np.ndarray:
    """Move the row of a one-row stratum into the largest stratum of its label (of any label
    when it is its label's only row; lowest code on ties, so the result is deterministic).

    train_test_split refuses a stratum of one row with a bare ValueError. Real cells have at
    least ``MIN_STRATUM_ROWS`` rows, so only a label's fallback stratum can hold one row: the
    single row of a label in rare cells (say race=Other, one positive). Folding it lets the
    split go on, and ``_check_groups_in_every_split`` then decides about its group. Tables
    without such a stratum keep their keys unchanged (the same splits as before).
    """
    counts = np.bincount(key)
    lonely = np.flatnonzero(counts == 1)
    if lonely.size == 0:
        return key
    key = key.copy()
    for stratum in lonely:
        (row,) = np.flatnonzero(key == stratum)
        others = key != stratum
        same_label = others & (label_code == label_code[row])
        candidates = key[same_label if same_label.any() else others]
        if candidates.size:  # else a one-row table: train_test_split explains that itself
            key[row] = int(np.argmax(np.bincount(candidates)))
    return key


def split_dataset(
    frame: pd.DataFrame, label: str, params: PrepareConfig, groups: list[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Return ``{"train", "val", "test"}`` frames.

    Stratifying on label × sensitive group (not the label alone) keeps every group's share
    and label balance the same in each split, so small groups still have test rows for the
    fairness audit. ``groups`` are the columns holding group labels (binned where declared).
    A group that ends up missing from a split is an error or a warning (prepare.unsplittable_group).
    Row positions are split first and each split's rows are taken once, so memory stays
    about twice the table.
    """
    groups = groups or []
    positions = np.arange(len(frame))
    rest, test = _stratified_split(
        positions, params.test_size, strata(frame, label, groups), params.seed, label, groups
    )
    # val_size is a share of the whole table, so rescale it to the remainder.
    val_share = params.val_size / (1.0 - params.test_size)
    rest_frame = frame.iloc[rest]
    # Strata are recomputed on the remainder (cells shrink), single rows folded again.
    train, val = _stratified_split(
        rest, val_share, strata(rest_frame, label, groups), params.seed, label, groups
    )
    del rest_frame
    picked = {"train": train, "val": val, "test": test}
    _check_groups_in_every_split(frame, picked, groups, params)
    return {name: frame.take(rows).reset_index(drop=True) for name, rows in picked.items()}


def _stratified_split(
    positions: np.ndarray, test_size: float, key: np.ndarray, seed: int, label: str, groups: list[str]
) -> list[np.ndarray]:
    try:
        return train_test_split(positions, test_size=test_size, stratify=key, random_state=seed)
    except ValueError as error:  # e.g. a table too small for its strata: say what was split
        sizes = np.bincount(key)
        raise DataValidationError(
            f"cannot split {len(positions)} rows stratified on {[label, *groups]} "
            f"(smallest strata: {sorted(int(n) for n in sizes[sizes > 0])[:5]} rows): {error}"
        ) from None


def _check_groups_in_every_split(
    frame: pd.DataFrame, picked: dict[str, np.ndarray], groups: list[str], params: PrepareConfig
) -> None:
    problems = []
    for column in groups:
        codes, names = pd.factorize(frame[column].astype(str))
        sizes = np.bincount(codes, minlength=len(names))
        for name in SPLIT_NAMES:
            present = np.bincount(codes[picked[name]], minlength=len(names)) > 0
            absent = [str(names[i]) for i in np.flatnonzero(~present)]
            if absent:
                problems.append(
                    f"{column}: group(s) {absent} have no rows in the {name} split "
                    f"(rows in the table: {[int(sizes[i]) for i in np.flatnonzero(~present)]})"
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
