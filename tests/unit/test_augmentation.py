"""fairtrain.data.augmentation: random minority oversampling and the label × group counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairtrain.config import AugmentConfig
from fairtrain.data.augmentation import (
    add_gaussian_noise,
    augment_training,
    balance_groups,
    group_counts,
    oversample_minority,
    smote_minority,
)


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


# ---- SMOTE, group-aware resampling and noise on a declared schema -----------------------------


@pytest.fixture
def schema_params():
    from fairtrain.config import params_from_dict
    from tests.unit.conftest import RAW_PARAMS

    raw = {
        **RAW_PARAMS,
        "dataset": {**RAW_PARAMS["dataset"], "label_values": ["neg", "pos"], "positive_class": "pos"},
    }
    raw["dataset"]["label"] = "y"
    raw["dataset"]["columns"] = {
        "age": {"type": "numeric", "min": 0, "max": 100},
        "hours": "numeric",
        "member": "boolean",
        "sex": "categorical",
        "y": "categorical",
    }
    raw["dataset"].update(sensitive_features=["sex"], drop=[], missing_values=[])
    raw["prepare"] = {**raw["prepare"], "log_transform": []}
    return lambda **augment: params_from_dict({**raw, "augment": {"seed": 0, **augment}})


@pytest.fixture
def typed_train() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 200
    sex = np.array(["Male"] * 140 + ["Female"] * 60)
    # Men: 40% positive; women: 10% positive.
    y = np.where(rng.random(n) < np.where(sex == "Male", 0.4, 0.1), "pos", "neg")
    return pd.DataFrame(
        {
            "age": rng.integers(20, 70, n).astype(float),
            "hours": rng.normal(40, 5, n),
            "member": pd.array(rng.random(n) < 0.5, dtype="boolean"),
            "sex": pd.array(sex, dtype="string"),
            "y": pd.array(y, dtype="string"),
        }
    )


def test_smote_synthesises_new_minority_rows_between_neighbours(schema_params, typed_train):
    params = schema_params(rebalance="smote", minority_ratio=1.0)
    out = smote_minority(typed_train, params.dataset, params.augment)
    counts = out["y"].value_counts()
    assert counts["pos"] == counts["neg"] == (typed_train["y"] == "neg").sum()
    positives = typed_train[typed_train["y"] == "pos"]
    new = out[out["y"] == "pos"].merge(positives, how="left", indicator=True)
    synthetic = new[new["_merge"] == "left_only"]
    assert len(synthetic) > 0  # not copies: interpolated values
    assert synthetic["age"].between(positives["age"].min(), positives["age"].max()).all()
    assert set(synthetic["sex"]) <= {"Male", "Female"} and synthetic["member"].notna().all()
    pd.testing.assert_frame_equal(out, smote_minority(typed_train, params.dataset, params.augment))


def test_group_balance_label_rate_equalises_positive_rates(schema_params, typed_train):
    params = schema_params(group_balance="label_rate")
    out = balance_groups(typed_train, params.dataset, params.augment)
    rates = out.groupby("sex")["y"].apply(lambda s: (s == "pos").mean())
    before = typed_train.groupby("sex")["y"].apply(lambda s: (s == "pos").mean())
    overall = (typed_train["y"] == "pos").mean()
    assert abs(before["Male"] - before["Female"]) > 0.15
    assert rates["Male"] == pytest.approx(overall, abs=0.01)
    assert rates["Female"] == pytest.approx(overall, abs=0.01)
    assert len(out) > len(typed_train)


def test_group_balance_count_equalises_group_sizes(schema_params, typed_train):
    params = schema_params(group_balance="count")
    out = balance_groups(typed_train, params.dataset, params.augment)
    assert out["sex"].value_counts().to_dict() == {"Male": 140, "Female": 140}
    female_rate = (typed_train.loc[typed_train["sex"] == "Female", "y"] == "pos").mean()
    new_female_rate = (out.loc[out["sex"] == "Female", "y"] == "pos").mean()
    assert new_female_rate == pytest.approx(female_rate, abs=0.06)  # label mix kept


def test_gaussian_noise_changes_numerics_only_within_range(schema_params, typed_train):
    params = schema_params(noise_std=0.5)
    out = add_gaussian_noise(typed_train, params.dataset, params.augment)
    diff = out["hours"] - typed_train["hours"]
    assert diff.std() == pytest.approx(0.5 * typed_train["hours"].std(), rel=0.25)
    assert out["age"].between(0, 100).all() and (out["age"] != typed_train["age"]).any()
    pd.testing.assert_series_equal(out["sex"], typed_train["sex"])  # sensitive and categorical untouched
    pd.testing.assert_series_equal(out["y"], typed_train["y"])


def test_sensitive_numeric_features_get_no_noise(schema_params, typed_train):
    params = schema_params(noise_std=0.5)
    raw = params.model_dump(mode="json", by_alias=True)
    raw["dataset"]["sensitive_features"] = ["sex", "age"]
    raw["dataset"]["bins"] = {"age": {"edges": [0, 40, 101], "labels": ["young", "old"]}}
    from fairtrain.config import params_from_dict

    params = params_from_dict(raw)
    out = add_gaussian_noise(typed_train, params.dataset, params.augment)
    pd.testing.assert_series_equal(out["age"], typed_train["age"])


def test_augment_training_reports_each_step(schema_params, typed_train):
    params = schema_params(group_balance="count", minority_ratio=1.0, rebalance="random", noise_std=0.1)
    out, steps = augment_training(typed_train, params.dataset, params.augment)
    assert [s["step"] for s in steps] == ["group_balance", "rebalance_random", "gaussian_noise"]
    assert steps[0]["rows_before"] == 200 and steps[-1]["rows_after"] == len(out)
