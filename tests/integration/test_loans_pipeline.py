"""The shipped synthetic loans data set (booleans, datetimes, a binned numeric sensitive
feature) through every stage after validate/prepare/augment: a model trained with plain
Lightning, then the real evaluate and register stages and the registered pyfunc model scoring
raw rows. Proves the declared-schema features survive downstream, not only in the data stages."""

from __future__ import annotations

import pandas as pd
import pytest

from fairtrain.config import load_params
from fairtrain.io import read_json
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
    fairness = read_json(result["outputs"]["fairness"])
    assert "gender" in fairness

    import mlflow

    model = mlflow.pyfunc.load_model(result["record"]["model_uri"])
    rows = pd.read_csv(raw, dtype=str, keep_default_na=False).head(4)
    scored = model.predict(rows[params.dataset.feature_columns])
    assert len(scored) == 4
