"""fairtrain.data.augmentation: random minority oversampling and the label × group counts."""

from __future__ import annotations

import pandas as pd
import pytest

from fairtrain.config import AugmentConfig
from fairtrain.data.augmentation import group_counts, oversample_minority


@pytest.fixture
def train() -> pd.DataFrame:
    # 40 negatives, 10 positives; every row is distinguishable by row_id.
    return pd.DataFrame(
        {
            "row_id": range(50),
            "sex": ["Male", "Female"] * 25,
            "race": ["White", "Black", "White", "White", "Other"] * 10,
            "y": ["neg"] * 40 + ["pos"] * 10,
        }
    )


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.77, 1.0])
def test_requested_ratio_is_reached(train, ratio):
    out = oversample_minority(train, "y", AugmentConfig(seed=3, minority_ratio=ratio))
    counts = out["y"].value_counts()
    assert counts["neg"] == 40  # the majority is never touched
    assert abs(counts["pos"] - ratio * 40) <= 1
    assert len(out) == 40 + counts["pos"]


def test_ratio_zero_returns_the_input_unchanged(train):
    out = oversample_minority(train, "y", AugmentConfig(seed=3, minority_ratio=0.0))
    pd.testing.assert_frame_equal(out, train)


def test_ratio_below_the_current_one_returns_the_input_unchanged(train):
    # current minority/majority is 10/40 = 0.25
    out = oversample_minority(train, "y", AugmentConfig(seed=3, minority_ratio=0.2))
    pd.testing.assert_frame_equal(out, train)


def test_single_class_input_is_returned_unchanged(train):
    only_neg = train[train["y"] == "neg"]
    out = oversample_minority(only_neg, "y", AugmentConfig(seed=3, minority_ratio=0.5))
    pd.testing.assert_frame_equal(out, only_neg.reset_index(drop=True))


def test_only_minority_rows_are_duplicated(train):
    out = oversample_minority(train, "y", AugmentConfig(seed=3, minority_ratio=0.5))
    # every original row is still there exactly once or more, and nothing new was invented
    assert set(out["row_id"]) == set(train["row_id"])
    originals = {tuple(r) for r in train.itertuples(index=False)}
    assert all(tuple(r) in originals for r in out.itertuples(index=False))
    times = out["row_id"].value_counts()
    duplicated = times[times > 1].index
    assert len(duplicated) > 0
    assert set(train.loc[train["row_id"].isin(duplicated), "y"]) == {"pos"}
    assert (times[train.loc[train["y"] == "neg", "row_id"]] == 1).all()
    assert times.sum() - len(train) == 10  # 20 positives wanted, 10 existed


def test_deterministic_for_a_seed(train):
    first = oversample_minority(train, "y", AugmentConfig(seed=11, minority_ratio=0.6))
    second = oversample_minority(train.copy(), "y", AugmentConfig(seed=11, minority_ratio=0.6))
    pd.testing.assert_frame_equal(first, second)
    other = oversample_minority(train, "y", AugmentConfig(seed=12, minority_ratio=0.6))
    assert not first["row_id"].equals(other["row_id"])


def test_result_is_shuffled_and_reindexed(train):
    out = oversample_minority(train, "y", AugmentConfig(seed=3, minority_ratio=0.5))
    assert out.index.equals(pd.RangeIndex(len(out)))
    # appended duplicates are mixed in, not all at the end
    assert (out["y"].iloc[-10:] != "pos").any()


def test_input_frame_is_not_modified(train):
    before = train.copy()
    oversample_minority(train, "y", AugmentConfig(seed=3, minority_ratio=1.0))
    pd.testing.assert_frame_equal(train, before)


def test_group_counts_total_the_rows_for_every_feature(train):
    augmented = oversample_minority(train, "y", AugmentConfig(seed=3, minority_ratio=0.5))
    for frame in (train, augmented):
        rows = group_counts(frame, "y", ["sex", "race"])
        for feature in ("sex", "race"):
            cells = [r for r in rows if r["feature"] == feature]
            assert sum(r["rows"] for r in cells) == len(frame)
            assert len({(r["group"], r["label"]) for r in cells}) == len(cells)


def test_group_counts_cells_are_exact(train):
    rows = group_counts(train, "y", ["sex"])
    cells = {(r["group"], r["label"]): r["rows"] for r in rows}
    assert cells == {("Female", "neg"): 20, ("Male", "neg"): 20, ("Female", "pos"): 5, ("Male", "pos"): 5}
    assert all(isinstance(r["rows"], int) for r in rows)


def test_group_counts_keep_missing_groups(train):
    frame = train.copy()
    frame["sex"] = frame["sex"].astype(object)
    frame.loc[0, "sex"] = None
    rows = group_counts(frame, "y", ["sex"])
    assert sum(r["rows"] for r in rows) == len(frame)
