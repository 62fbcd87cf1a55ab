"""fairtrain.config: params.yaml → validated, frozen pydantic objects with path-naming errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairtrain.config import ColumnType, RegisterConfig, load_params, params_from_dict
from fairtrain.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_real_params_yaml_loads():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.dataset.label == "income-per-year"
    assert params.dataset.positive_class in params.dataset.label_values
    assert params.dataset.columns["age"].type is ColumnType.numeric
    assert params.dataset.label not in params.dataset.feature_columns
    assert set(params.prepare.log_transform) <= set(params.dataset.numeric_features)
    assert params.registry.model_name


def test_missing_params_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dataset: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        params_from_dict(["dataset"])


def test_fixture_dict_is_valid(params):
    assert params.train.max_epochs == 3
    assert params.evaluate.gates.min_roc_auc == 0.8


def test_unknown_key_names_its_path(raw_params):
    raw_params["train"]["max_epoch"] = 10
    with pytest.raises(ConfigError) as caught:
        params_from_dict(raw_params)
    message = str(caught.value)
    assert "train.max_epoch" in message
    assert "unknown key" in message


def test_unknown_nested_key_names_its_full_path(raw_params):
    raw_params["evaluate"]["gates"]["min_auc"] = 0.9
    with pytest.raises(ConfigError, match=r"evaluate\.gates\.min_auc"):
        params_from_dict(raw_params)


def test_wrong_type_names_its_path_and_value(raw_params):
    raw_params["train"]["max_epochs"] = "abc"
    with pytest.raises(ConfigError) as caught:
        params_from_dict(raw_params)
    message = str(caught.value)
    assert "train.max_epochs" in message
    assert "'abc'" in message


def test_every_problem_is_reported_at_once(raw_params):
    raw_params["train"]["max_epochs"] = "abc"
    raw_params["prepare"]["test_sise"] = 0.3
    with pytest.raises(ConfigError) as caught:
        params_from_dict(raw_params, source="my-params.yaml")
    message = str(caught.value)
    assert message.startswith("my-params.yaml:")
    assert "2 problem(s)" in message
    assert "train.max_epochs" in message
    assert "prepare.test_sise" in message


def test_out_of_range_value_is_rejected(raw_params):
    raw_params["evaluate"]["threshold"] = 1.5
    with pytest.raises(ConfigError, match=r"evaluate\.threshold"):
        params_from_dict(raw_params)


def test_label_not_declared_in_columns(raw_params):
    raw_params["dataset"]["label"] = "income"
    with pytest.raises(ConfigError) as caught:
        params_from_dict(raw_params)
    message = str(caught.value)
    assert "label names columns not declared in dataset.columns" in message
    assert "'income'" in message


def test_sensitive_feature_not_declared_in_columns(raw_params):
    raw_params["dataset"]["sensitive_features"] = ["sex", "gender"]
    with pytest.raises(ConfigError, match=r"sensitive_features names columns not declared.*'gender'"):
        params_from_dict(raw_params)


def test_positive_class_not_in_label_values(raw_params):
    raw_params["dataset"]["positive_class"] = ">=50K"
    with pytest.raises(ConfigError) as caught:
        params_from_dict(raw_params)
    message = str(caught.value)
    assert "positive_class '>=50K' is not one of label_values" in message


def test_numeric_label_is_rejected(raw_params):
    raw_params["dataset"]["columns"]["income-per-year"] = "numeric"
    with pytest.raises(ConfigError, match="must be declared categorical"):
        params_from_dict(raw_params)


def test_dropping_a_sensitive_feature_is_rejected(raw_params):
    raw_params["dataset"]["drop"] = ["fnlwgt", "sex"]
    with pytest.raises(ConfigError, match="drop may not name the label or a sensitive feature"):
        params_from_dict(raw_params)


def test_log_transform_of_a_categorical_column_is_rejected(raw_params):
    raw_params["prepare"]["log_transform"] = ["capital-gain", "workclass"]
    with pytest.raises(ConfigError) as caught:
        params_from_dict(raw_params)
    # Only the offending column is listed; the numeric one is accepted.
    assert "prepare.log_transform names columns that are not numeric features: ['workclass']" in str(
        caught.value
    )


def test_log_transform_of_a_dropped_column_is_rejected(raw_params):
    raw_params["prepare"]["log_transform"] = ["fnlwgt"]
    with pytest.raises(ConfigError, match=r"prepare\.log_transform.*'fnlwgt'"):
        params_from_dict(raw_params)


def test_splits_must_leave_training_rows(raw_params):
    raw_params["prepare"]["test_size"] = 0.5
    raw_params["prepare"]["val_size"] = 0.45
    with pytest.raises(ConfigError, match="at least 10% of rows for training"):
        params_from_dict(raw_params)


def test_feature_columns_exclude_label_and_dropped(params):
    dataset = params.dataset
    assert dataset.feature_columns == ["age", "workclass", "capital-gain", "hours-per-week", "sex", "race"]
    assert dataset.numeric_features == ["age", "capital-gain", "hours-per-week"]
    assert dataset.categorical_features == ["workclass", "sex", "race"]
    assert dataset.negative_class == "<=50K"


def test_register_key_is_reachable_as_registry(params):
    assert isinstance(params.registry, RegisterConfig)
    assert params.registry.model_name == "fairtrain-tiny"
    assert params.registry.primary_metric == "roc_auc"


def test_register_section_is_required(raw_params):
    del raw_params["register"]
    with pytest.raises(ConfigError, match="register"):
        params_from_dict(raw_params)


def test_defaults_fill_optional_sections(raw_params):
    for section in ("prepare", "augment", "train", "evaluate", "tracking"):
        del raw_params[section]
    params = params_from_dict(raw_params)
    assert params.train.max_epochs == 20
    assert params.augment.minority_ratio == 0.0
    assert params.tracking.experiment == "fairtrain"


def test_params_are_frozen(params):
    with pytest.raises(ValueError, match="frozen"):
        params.train.max_epochs = 99


def test_duplicate_label_values_are_rejected(raw_params):
    raw_params["dataset"]["label_values"] = [">50K", ">50K"]
    with pytest.raises(ConfigError, match="label_values"):
        params_from_dict(raw_params)


def test_mitigation_feature_must_be_a_sensitive_feature(raw_params):
    raw_params.setdefault("evaluate", {})["mitigation"] = {"enabled": True, "sensitive_feature": "age"}
    with pytest.raises(ConfigError, match=r"evaluate.mitigation.sensitive_feature 'age' is not one of"):
        params_from_dict(raw_params)


def test_non_regression_metric_is_checked(raw_params):
    raw_params.setdefault("evaluate", {})["gates"] = {"champion_non_regression": {"metric": "ece"}}
    with pytest.raises(ConfigError, match=r"evaluate.gates.champion_non_regression.metric"):
        params_from_dict(raw_params)


def test_a_hidden_layer_needs_at_least_one_unit(raw_params):
    # A negative width used to fail only inside the Ray workers, after the MLflow run opened;
    # a zero width trained a bias-only model without a word.
    for width in (-3, 0):
        raw_params["train"]["hidden_sizes"] = [64, width]
        with pytest.raises(
            ConfigError, match=rf"train\.hidden_sizes\.1: .*greater than or equal to 1 \(got {width}\)"
        ):
            params_from_dict(raw_params)


def test_a_threshold_target_the_rule_does_not_use_is_refused(raw_params):
    # max_f1 failed after the whole test split was scored; fixed ignored the target silently.
    raw_params["evaluate"]["threshold_target"] = 0.8
    for rule in ("fixed", "max_f1"):
        raw_params["evaluate"]["threshold_rule"] = rule
        with pytest.raises(
            ConfigError, match=rf"threshold_target 0.8 is only used by .* not by threshold_rule '{rule}'"
        ):
            params_from_dict(raw_params)
    raw_params["evaluate"]["threshold_rule"] = "target_recall"
    assert params_from_dict(raw_params).evaluate.threshold_target == 0.8


def test_float16_mixed_precision_without_gpus_is_refused_at_load(raw_params):
    raw_params["train"].update(precision="16-mixed", use_gpu=False)
    with pytest.raises(ConfigError, match=r"train: .*precision 16-mixed needs GPUs .* use_gpu is false"):
        params_from_dict(raw_params)
    raw_params["train"]["use_gpu"] = True  # whether GPUs exist is checked when training starts
    assert params_from_dict(raw_params).train.precision == "16-mixed"
    raw_params["train"].update(precision="bf16-mixed", use_gpu=False)  # bf16 autocast runs on CPU
    assert params_from_dict(raw_params).train.precision == "bf16-mixed"
