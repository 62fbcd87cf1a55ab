"""fairtrain.data.preprocessing: fitted on train only, JSON round-trip, robust at serving time."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairtrain.data.preprocessing import MISSING, OTHER, Preprocessor, fit_preprocessor
from fairtrain.data.validation import clean_table
from fairtrain.errors import DataValidationError

# cleaned_train (conftest): 40 rows; workclass = Private×20, Self-emp×10, State-gov×6,
# Never-worked×1 (rare at min_category_count=2), NA×3; sex 20/20; race White×20, Black×10, Other×10.


@pytest.fixture
def pre(cleaned_train, params) -> Preprocessor:
    return fit_preprocessor(cleaned_train, params.dataset, params.prepare)


def _one_hot(pre: Preprocessor, matrix: np.ndarray, column: str) -> list[str]:
    """Which slot of ``column`` is hot in each row, by name."""
    idx = pre.feature_groups[column]
    block = matrix[:, idx]
    assert np.array_equal(block.sum(axis=1), np.ones(len(block))), "exactly one slot per row"
    names = [pre.feature_names[i].split("=", 1)[1] for i in idx]
    return [names[j] for j in block.argmax(axis=1)]


def test_inputs_are_the_feature_columns(pre, params):
    assert pre.input_columns == params.dataset.numeric_features + params.dataset.categorical_features
    assert "fnlwgt" not in pre.input_columns  # dropped
    assert "income-per-year" not in pre.input_columns  # label


def test_vocabulary_order_and_rare_categories(pre):
    assert pre.categorical["workclass"].categories == ["Private", "Self-emp", "State-gov", OTHER, MISSING]
    assert pre.categorical["sex"].categories == ["Female", "Male", OTHER, MISSING]  # tie → by name
    assert pre.categorical["race"].categories == ["White", "Black", "Other", OTHER, MISSING]
    assert pre.n_features == 3 + 5 + 4 + 5
    assert len(pre.feature_names) == pre.n_features
    assert pre.feature_names[:4] == ["age", "capital-gain", "hours-per-week", "workclass=Private"]


def test_statistics_come_from_the_training_split_only(cleaned_train, params, pre):
    age = cleaned_train["age"].to_numpy()
    assert pre.numeric["age"].mean == pytest.approx(age.mean())
    assert pre.numeric["age"].std == pytest.approx(age.std())
    assert pre.numeric["age"].median == pytest.approx(np.median(age))

    # Transforming other data (val/test, serving) never changes the fitted state...
    shifted = cleaned_train.assign(age=cleaned_train["age"] + 1000.0)
    before = pre.to_dict()
    out = pre.transform(shifted)
    assert pre.to_dict() == before
    # ...so it is standardised with the training statistics and lands far from zero.
    assert out[:, pre.feature_groups["age"][0]].mean() == pytest.approx(1000.0 / age.std(), rel=1e-4)
    # and fitting on train+other would have given a different state (the check above is meaningful)
    both = fit_preprocessor(pd.concat([cleaned_train, shifted]), params.dataset, params.prepare)
    assert both.numeric["age"].mean != pytest.approx(pre.numeric["age"].mean)


def test_output_shape_and_dtype(pre, cleaned_train):
    out = pre.transform(cleaned_train)
    assert out.shape == (len(cleaned_train), pre.n_features)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_numerics_are_standardised_on_training_data(cleaned_train, params):
    frame = cleaned_train.copy()
    frame.loc[[0, 5], "hours-per-week"] = np.nan  # imputed with the median, still standardised
    fitted = fit_preprocessor(frame, params.dataset, params.prepare)
    out = fitted.transform(frame)
    for column in fitted.numeric:
        values = out[:, fitted.feature_groups[column][0]].astype(np.float64)
        assert values.mean() == pytest.approx(0.0, abs=1e-5), column
        assert values.std() == pytest.approx(1.0, abs=1e-4), column


def test_missing_numeric_values_are_imputed_with_the_training_median(cleaned_train, params):
    frame = cleaned_train.copy()
    frame.loc[[0, 5], "hours-per-week"] = np.nan
    pre = fit_preprocessor(frame, params.dataset, params.prepare)
    state = pre.numeric["hours-per-week"]
    assert state.median == pytest.approx(np.nanmedian(frame["hours-per-week"]))
    out = pre.transform(frame.iloc[[0]])
    assert out[0, pre.feature_groups["hours-per-week"][0]] == pytest.approx(
        (state.median - state.mean) / state.std, abs=1e-6
    )


def test_log_transform_is_applied(pre, cleaned_train):
    state = pre.numeric["capital-gain"]
    assert state.log1p is True
    assert pre.numeric["age"].log1p is False
    logged = np.log1p(cleaned_train["capital-gain"].to_numpy())
    assert state.mean == pytest.approx(logged.mean())
    assert state.std == pytest.approx(logged.std())
    out = pre.transform(pd.DataFrame({**_row(cleaned_train), "capital-gain": [99999.0]}))
    expected = (np.log1p(99999.0) - state.mean) / state.std
    assert out[0, pre.feature_groups["capital-gain"][0]] == pytest.approx(expected, rel=1e-5)
    # a raw (un-logged) standardisation would be far larger
    assert expected < 10


def _row(frame: pd.DataFrame, i: int = 0) -> dict:
    return {c: [frame[c].iloc[i]] for c in frame.columns}


def test_unseen_rare_and_missing_categories_get_their_slots(pre, cleaned_train):
    frame = pd.concat([cleaned_train.iloc[[0]]] * 6, ignore_index=True)
    frame["workclass"] = pd.array(
        ["Private", "Federal-gov", "Never-worked", "?", None, "  Self-emp "], dtype=object
    )
    out = pre.transform(frame)
    assert _one_hot(pre, out, "workclass") == ["Private", OTHER, OTHER, MISSING, MISSING, "Self-emp"]
    other = pre.feature_names.index(f"workclass={OTHER}")
    missing = pre.feature_names.index(f"workclass={MISSING}")
    assert out[1, other] == 1.0 and out[1, missing] == 0.0  # unseen
    assert out[2, other] == 1.0  # rare in training (1 < min_category_count)
    assert out[3, missing] == 1.0 and out[3, other] == 0.0  # the declared marker "?"
    assert out[4, missing] == 1.0  # NaN / None


def test_numbers_given_as_strings_are_accepted(pre, cleaned_train):
    typed = cleaned_train.iloc[:3].copy()
    typed.loc[2, "age"] = np.nan
    as_text = typed.copy()
    as_text["age"] = pd.array([str(typed.loc[0, "age"]), f" {typed.loc[1, 'age']} ", "?"], dtype=object)
    as_text["hours-per-week"] = typed["hours-per-week"].astype(str)
    np.testing.assert_array_equal(pre.transform(as_text), pre.transform(typed))


def test_non_numeric_string_in_a_numeric_column_is_named(pre, cleaned_train):
    frame = cleaned_train.iloc[:3].copy()
    frame["age"] = pd.array(["39", "forty", "41"], dtype=object)
    with pytest.raises(DataValidationError, match="'age'") as caught:
        pre.transform(frame)
    assert "forty" in str(caught.value)


def test_missing_input_column_is_named(pre, cleaned_train):
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['race'\]"):
        pre.transform(cleaned_train.drop(columns=["race"]))


def test_extra_columns_are_ignored(pre, cleaned_train):
    np.testing.assert_array_equal(
        pre.transform(cleaned_train.drop(columns=["fnlwgt", "income-per-year"])),
        pre.transform(cleaned_train),
    )


def test_json_round_trip_gives_identical_output(pre, cleaned_train):
    payload = json.loads(json.dumps(pre.to_dict()))
    restored = Preprocessor.from_dict(payload)
    assert restored.feature_names == pre.feature_names == payload["feature_names"]
    assert restored.missing_values == ["?"]
    probe = cleaned_train.copy()
    probe.loc[0, "workclass"] = "unseen"
    probe.loc[1, "workclass"] = "?"
    np.testing.assert_array_equal(restored.transform(probe), pre.transform(probe))


def test_unknown_format_version_is_rejected(pre):
    payload = pre.to_dict() | {"format_version": 99}
    with pytest.raises(ValueError, match="format_version 99"):
        Preprocessor.from_dict(payload)


def test_feature_groups_partition_the_features(pre):
    groups = pre.feature_groups
    assert list(groups) == pre.input_columns
    indices = sorted(i for idx in groups.values() for i in idx)
    assert indices == list(range(pre.n_features))
    for column, idx in groups.items():
        assert all(
            pre.feature_names[i] == column or pre.feature_names[i].startswith(f"{column}=") for i in idx
        )


def test_constant_column_becomes_a_zero_feature(cleaned_train, params):
    frame = cleaned_train.assign(**{"hours-per-week": 40.0})
    pre = fit_preprocessor(frame, params.dataset, params.prepare)
    assert pre.numeric["hours-per-week"].std == 1.0
    out = pre.transform(frame)
    assert np.all(out[:, pre.feature_groups["hours-per-week"][0]] == 0.0)


def test_all_missing_training_column_is_an_error(cleaned_train, params):
    with pytest.raises(DataValidationError, match=r"'age'.*every training value is missing"):
        fit_preprocessor(cleaned_train.assign(age=np.nan), params.dataset, params.prepare)


def test_raw_rows_and_cleaned_rows_give_the_same_features(raw_frame, params):
    # Serving sends raw strings (padding, "?" markers); training saw clean_table's output.
    raw = raw_frame.copy()
    raw.loc[1, "sex"] = " Male "
    raw.loc[2, "hours-per-week"] = "?"
    clean = clean_table(raw, params.dataset)
    pre = fit_preprocessor(clean, params.dataset, params.prepare)
    np.testing.assert_array_equal(pre.transform(raw), pre.transform(clean))
    assert _one_hot(pre, pre.transform(raw), "workclass")[5] == MISSING


def test_negative_values_in_a_log_transform_column_are_refused(cleaned_train, params):
    """log1p used to clip them to 0, so -5000, -10 and 0 became the same feature value."""
    train = cleaned_train.copy()
    train.loc[[1, 2, 3], "capital-gain"] = [-5000.0, -10.0, -10.0]
    with pytest.raises(DataValidationError) as caught:
        fit_preprocessor(train, params.dataset, params.prepare)
    message = str(caught.value)
    assert "'capital-gain': 3 negative value(s), e.g. [-5000.0, -10.0]" in message
    assert "prepare.log_transform" in message


def test_prepare_refuses_a_negative_log_transform_value_in_any_split(tmp_path, params, cleaned_train):
    from fairtrain.stages.prepare_stage import prepare_stage

    table = pd.concat([cleaned_train] * 5, ignore_index=True)
    table.loc[len(table) - 1, "capital-gain"] = -1.0  # wherever that row lands
    validated = tmp_path / "validated.parquet"
    table.to_parquet(validated, index=False)
    with pytest.raises(DataValidationError, match=r"'capital-gain': 1 negative value\(s\), e\.g\. \[-1\.0\]"):
        prepare_stage(params, validated, tmp_path / "prepared", tmp_path / "prepare.json")
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "prepare.json").exists()
