"""Bring-your-own data: schemas declared in params (types, bins, constraints) and the shipped
synthetic loans data set going through validate → prepare → augment."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from fairtrain.config import load_params, params_from_dict
from fairtrain.data.generators import adult_like, loans_table
from fairtrain.data.parsing import bin_labels
from fairtrain.data.preprocessing import Preprocessor, fit_preprocessor
from fairtrain.errors import ConfigError, DataValidationError
from fairtrain.io import read_json
from fairtrain.stages.augment_stage import augment_stage
from fairtrain.stages.prepare_stage import prepare_stage
from fairtrain.stages.validate_stage import validate_stage
from tests.helpers import PROJECT_ROOT

LOANS_PARAMS = PROJECT_ROOT / "examples/loans/params.yaml"


@pytest.fixture
def loans_raw() -> dict:
    return yaml.safe_load(LOANS_PARAMS.read_text())


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        params_from_dict(raw)
    return str(caught.value)


def test_more_than_two_label_values_is_a_clear_error(loans_raw):
    loans_raw["dataset"]["label_values"] = ["denied", "approved", "pending"]
    assert "only binary classification is supported" in _error(loans_raw)


def test_numeric_sensitive_feature_needs_bins(loans_raw):
    del loans_raw["dataset"]["bins"]
    assert "applicant_age" in _error(loans_raw) and "declare its bins" in _error(loans_raw)


@pytest.mark.parametrize(
    ("bins", "needle"),
    [
        ({"edges": [18, 40, 30], "labels": ["a", "b"]}, "increase strictly"),
        ({"edges": [18, 40, 90], "labels": ["a"]}, "3 edges make 2 bins but 1 labels"),
        ({"edges": [18, 40, 90], "labels": ["a", "a"]}, "distinct"),
    ],
)
def test_bad_bins_are_rejected(loans_raw, bins, needle):
    loans_raw["dataset"]["bins"]["applicant_age"] = bins
    assert needle in _error(loans_raw)


def test_options_that_do_not_fit_the_type_are_rejected(loans_raw):
    loans_raw["dataset"]["columns"]["region"] = {"type": "categorical", "min": 0}
    assert "dataset.columns.region" in _error(loans_raw) and "'min'" in _error(loans_raw)


def test_bins_cover_edges_and_flag_values_outside():
    groups, outside = bin_labels(
        np.array([18, 24.9, 25, 80, 81, 17, np.nan]), [18, 25, 81], ["young", "older"]
    )
    assert groups.tolist()[:5] == ["young", "young", "older", "older", "older"]  # last edge included
    assert outside.tolist() == [False, False, False, False, False, True, False]
    assert pd.isna(groups[6])


def test_nothing_in_the_code_names_adult_columns():
    adult = ["income-per-year", "capital-gain", "marital-status", "native-country", "workclass", "fnlwgt"]
    hits = [
        (str(path.relative_to(PROJECT_ROOT)), name)
        for path in (PROJECT_ROOT / "src/fairtrain").rglob("*.py")
        if path.name != "generators.py"  # the Adult-shaped benchmark generator, by design
        for name in adult
        if name in path.read_text()
    ]
    assert hits == []


def test_loans_generator_is_deterministic():
    first, second = loans_table(300, seed=3), loans_table(300, seed=3)
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(loans_table(300, seed=4))


def test_adult_like_keeps_columns_and_ranges(adult_raw):
    big = adult_like(adult_raw, 5000, seed=1)
    assert list(big.columns) == list(adult_raw.columns) and len(big) == 5000
    ages = pd.to_numeric(big["age"])
    assert ages.between(17, 90).all() and ages.nunique() > 50


def test_loans_go_through_validate_prepare_augment(tmp_path):
    params = load_params(LOANS_PARAMS)
    raw = copy.deepcopy(params.model_dump(mode="json", by_alias=True))
    raw["augment"].update(rebalance="smote", minority_ratio=1.0, noise_std=0.05)
    params = params_from_dict(raw)
    report = validate_stage(
        params, PROJECT_ROOT / params.dataset.path, tmp_path / "v.parquet", tmp_path / "validation.json"
    )
    assert report.passed, report.summary()
    validated = pd.read_parquet(tmp_path / "v.parquet")
    assert pd.api.types.is_bool_dtype(validated["has_guarantor"])
    assert pd.api.types.is_datetime64_any_dtype(validated["application_date"])
    assert validated["credit_score"].isna().sum() > 0  # "NA" marker → missing

    stats = prepare_stage(params, tmp_path / "v.parquet", tmp_path / "prepared", tmp_path / "prepare.json")
    test = pd.read_parquet(tmp_path / "prepared/test.parquet")
    # The binned sensitive feature: raw ages stay (a model input), the bands sit beside them.
    assert set(test["applicant_age_group"]) == {"18-24", "25-34", "35-49", "50-64", "65+"}
    assert stats["group_columns"] == ["gender", "applicant_age_group"]
    preprocessor = Preprocessor.from_dict(read_json(tmp_path / "prepared/preprocessor.json"))
    assert "application_date.month" in preprocessor.feature_names
    assert not any(n.startswith("last_contact") for n in preprocessor.feature_names)  # derive: []
    assert "has_guarantor" in preprocessor.feature_names
    matrix = preprocessor.transform(test)
    assert matrix.shape == (len(test), preprocessor.n_features) and np.isfinite(matrix).all()
    # Serving sends raw strings: the same preprocessor reads them.
    raw_rows = pd.read_csv(PROJECT_ROOT / params.dataset.path, dtype=str, keep_default_na=False).head(5)
    assert np.isfinite(preprocessor.transform(raw_rows)).all()

    augmented = augment_stage(
        params, tmp_path / "prepared/train.parquet", tmp_path / "augmented.parquet", tmp_path / "augment.json"
    )
    counts = augmented["label_counts_after"]
    assert counts["approved"] == counts["denied"]  # SMOTE to 1:1
    train = pd.read_parquet(tmp_path / "augmented.parquet")
    assert train["applicant_age_group"].notna().all()
    assert {c["feature"] for c in augmented["cells_after"]} == {"gender", "applicant_age_group"}
    flat = read_json(tmp_path / "augment.json")["rows_by_group_and_label"]
    young = flat["applicant_age_group=18-24|label=approved"]
    assert young["after"] > young["before"] > 0  # SMOTE added approved rows to the group
    assert sum(v["after"] for k, v in flat.items() if k.startswith("gender=")) == len(train)


def test_boolean_and_datetime_features_are_encoded_from_cleaned_and_raw_rows():
    params = load_params(LOANS_PARAMS)
    raw = loans_table(200, seed=5)
    from fairtrain.data.validation import add_group_columns, clean_table

    cleaned = add_group_columns(clean_table(raw, params.dataset), params.dataset)
    pre = fit_preprocessor(cleaned, params.dataset, params.prepare)
    from_clean, from_raw = pre.transform(cleaned), pre.transform(raw)
    np.testing.assert_allclose(from_clean, from_raw, rtol=1e-6)
    column = pre.feature_names.index("has_guarantor")
    assert len(np.unique(from_clean[:, column])) == 2
    bad = raw.head(2).copy()
    bad.loc[0, "has_guarantor"] = "perhaps"
    with pytest.raises(DataValidationError, match=r"column 'has_guarantor': .*not booleans.*'perhaps'"):
        pre.transform(bad)
