"""Integration fixtures: the real data stages run once per session on a sample of Adult."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairtrain.config import Params
from fairtrain.stages.augment_stage import augment_stage
from fairtrain.stages.prepare_stage import prepare_stage
from fairtrain.stages.validate_stage import validate_stage
from tests.helpers import adult_sample, shrink_params

SAMPLE_ROWS = 4000


@pytest.fixture(scope="session")
def small_params(project_params: Params) -> Params:
    return shrink_params(
        project_params,
        train={"max_epochs": 3, "num_workers": 2},
        evaluate={"attribution_samples": 200, "ig_steps": 20},
    )


@pytest.fixture(scope="session")
def lenient(small_params: Params) -> Params:
    """Gates a model trained for seconds on 4,000 rows passes, so it becomes champion. The
    integration tests exercise registration and promotion mechanics; disparity gates on
    groups of a few dozen test rows would decide on noise."""
    return shrink_params(
        small_params,
        evaluate={
            "min_group_size": 20,
            "gates": {
                "min_roc_auc": 0.8,
                "max_demographic_parity_difference": 1.0,
                "max_equalized_odds_difference": 1.0,
                "max_expected_calibration_error": 1.0,
            },
        },
    )


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, adult_raw, small_params: Params) -> dict[str, Path]:
    """validate → prepare → augment on a 4,000-row sample, as the DVC stages would."""
    root = tmp_path_factory.mktemp("prepared")
    raw = root / "adult_sample.csv"
    adult_sample(adult_raw, SAMPLE_ROWS).to_csv(raw, index=False)
    validate_stage(small_params, raw, root / "validated.parquet", root / "validation.json")
    prepare_stage(small_params, root / "validated.parquet", root / "prepared", root / "prepare.json")
    augment_stage(
        small_params, root / "prepared/train.parquet", root / "augmented.parquet", root / "augment.json"
    )
    return {
        "root": root,
        "raw": raw,
        "train": root / "augmented.parquet",
        "val": root / "prepared/val.parquet",
        "test": root / "prepared/test.parquet",
        "preprocessor": root / "prepared/preprocessor.json",
        "validation": root / "validation.json",
        "prepare": root / "prepare.json",
        "augment": root / "augment.json",
    }
