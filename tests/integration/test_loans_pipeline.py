"""The shipped synthetic loans data set (booleans, datetimes, a binned numeric sensitive
feature) through every stage after validate/prepare/augment: a model trained with plain
Lightning, then the real evaluate and register stages and the registered pyfunc model scoring
raw rows. Proves the declared-schema features survive downstream, not only in the data stages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fairtrain.config import load_params
from fairtrain.data.preprocessing import Preprocessor
from fairtrain.io import read_json
from fairtrain.models.export import load_model
from fairtrain.stages.augment_stage import augment_stage
from fairtrain.stages.prepare_stage import prepare_stage
from fairtrain.stages.validate_stage import validate_stage
from tests.helpers import PROJECT_ROOT, shrink_params
from tests.integration.pipeline import run_after_training

pytestmark = pytest.mark.slow


def test_loans_end_to_end(tmp_path, mlflow_store):
    params = shrink_params(
        load_params(PROJECT_ROOT / "examples/loans/params.yaml"),
        evaluate={"attribution_samples": 100, "ig_steps": 10, "bootstrap_resamples": 0, "baselines": False},
        augment={"rebalance": "smote", "minority_ratio": 1.0},
    )
    raw = PROJECT_ROOT / params.dataset.path
    validate_stage(params, raw, tmp_path / "validated.parquet", tmp_path / "validation.json")
    prepare_stage(params, tmp_path / "validated.parquet", tmp_path / "prepared", tmp_path / "prepare.json")
    augment_stage(
        params, tmp_path / "prepared/train.parquet", tmp_path / "augmented.parquet", tmp_path / "a.json"
    )
    prepared = {
        "raw": raw,
        "train": tmp_path / "augmented.parquet",
        "val": tmp_path / "prepared/val.parquet",
        "test": tmp_path / "prepared/test.parquet",
        "preprocessor": tmp_path / "prepared/preprocessor.json",
    }
    result = run_after_training(params, prepared, tmp_path / "run", epochs=3)
    evaluation = read_json(result["outputs"]["evaluation"])
    assert evaluation["roc_auc"] > 0.75

    # Both sensitive features are audited on the test split, the numeric age by its declared
    # bands (the <feature>_group column prepare adds), not by raw ages.
    assert params.dataset.group_columns == ["gender", "applicant_age_group"]
    test = pd.read_parquet(prepared["test"])
    fairness = read_json(result["outputs"]["fairness"])
    assert {"gender", "applicant_age_group"} <= set(fairness)
    assert "applicant_age" not in fairness
    age_groups = fairness["applicant_age_group"]["groups"]
    assert set(age_groups) == set(params.dataset.bins["applicant_age"].labels)
    assert sum(g["count"] for g in age_groups.values()) == len(test)
    assert fairness["applicant_age_group"]["gated"]
    # Each feature's disparity figures are also in evaluation.json, the file `dvc exp show`
    # compares (fairness.json, with every group, is too big to be a DVC metric).
    names = ("demographic_parity_difference", "equalized_odds_difference")
    names += ("demographic_parity_ratio", "equalized_odds_ratio")
    assert evaluation["disparities"] == {
        feature: {name: audit[name] for name in names} for feature, audit in fairness.items()
    }
    assert {"gender", "applicant_age_group"} <= set(evaluation["disparities"])

    # Every declared feature column, the boolean and datetime ones included, reaches the
    # model and is explained (one-hot and derived slots summed back to their column).
    attributions = read_json(result["outputs"]["attributions"])
    assert {row["column"] for row in attributions["importance"]} == set(params.dataset.feature_columns)
    assert {"has_guarantor", "first_time_borrower", "application_date"} <= set(params.dataset.feature_columns)

    import mlflow

    # Raw rows of the CSV (strings, "NA" and "unknown" markers) through the registered model
    # score as the exported network does on the same rows preprocessed in this process.
    model = mlflow.pyfunc.load_model(result["record"]["model_uri"])
    rows = pd.read_csv(raw, dtype=str, keep_default_na=False).head(50)[params.dataset.feature_columns]
    scored = model.predict(rows)
    assert len(scored) == 50
    assert scored["probability"].between(0, 1).all()
    assert set(scored["label"]) <= set(params.dataset.label_values)
    assert (params.evaluate.threshold_rule, params.evaluate.mitigation.enabled) == ("fixed", False)
    approved = scored["probability"] >= params.evaluate.threshold
    assert (scored["label"] == params.dataset.positive_class).equals(approved)
    preprocessor = Preprocessor.from_dict(read_json(prepared["preprocessor"]))
    network = load_model(tmp_path / "run/models/model")
    with torch.no_grad():
        expected = network.predict_proba(torch.from_numpy(preprocessor.transform(rows))).numpy()
    np.testing.assert_allclose(scored["probability"].to_numpy(), expected.astype(np.float64), rtol=1e-6)
