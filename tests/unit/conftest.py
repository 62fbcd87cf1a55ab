"""Fixtures for the unit tier: a small params dict in the shape of params.yaml and tiny frames.

Everything is built in memory (Kedro-style fixtures); nothing reads the real data, the MLflow
store or the DVC outputs, which are not in git.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairtrain.config import Params, params_from_dict

LABEL = "income-per-year"
POSITIVE = ">50K"
NEGATIVE = "<=50K"

# Same shape as /work/main/params.yaml, with a smaller schema.
RAW_PARAMS = {
    "dataset": {
        "path": "data/raw/tiny.csv",
        "label": LABEL,
        "positive_class": POSITIVE,
        "label_values": [NEGATIVE, POSITIVE],
        "sensitive_features": ["sex", "race"],
        "missing_values": ["?"],
        "drop": ["fnlwgt"],
        "columns": {
            "age": "numeric",
            "workclass": "categorical",
            "fnlwgt": "numeric",
            "capital-gain": "numeric",
            "hours-per-week": "numeric",
            "sex": "categorical",
            "race": "categorical",
            LABEL: "categorical",
        },
    },
    # Eight rows: every group is "small"; the group-size check has its own tests.
    "validate": {"min_group_rows": 1},
    "prepare": {
        "seed": 42,
        "test_size": 0.2,
        "val_size": 0.1,
        "log_transform": ["capital-gain"],
        "min_category_count": 2,
    },
    "augment": {"seed": 42, "minority_ratio": 0.5},
    "train": {
        "seed": 42,
        "num_workers": 1,
        "use_gpu": False,
        "max_epochs": 3,
        "batch_size": 16,
        "learning_rate": 0.01,
        "weight_decay": 0.0001,
        "dropout": 0.0,
        "hidden_sizes": [8, 4],
        "early_stopping_patience": 2,
    },
    "evaluate": {
        "threshold": 0.5,
        "seed": 42,
        "attribution_samples": 10,
        "ig_steps": 20,
        "ig_internal_batch_size": 64,
        "min_group_size": 3,
        "gates": {
            "min_roc_auc": 0.8,
            "max_demographic_parity_difference": 0.25,
            "max_equalized_odds_difference": 0.25,
        },
    },
    "register": {"model_name": "fairtrain-tiny", "primary_metric": "roc_auc", "promotion_margin": 0.0},
    "report": {
        "model_name": "Tiny income classifier",
        "intended_use": "Unit tests of the model card.",
        "out_of_scope_uses": ["Decisions about real people."],
    },
    "tracking": {"experiment": "fairtrain-unit"},
}

COLUMNS = list(RAW_PARAMS["dataset"]["columns"])

# Eight rows as a CSV reader hands them over: every cell a string, "?" marks a missing value.
RAW_ROWS = [
    ["39", "State-gov", "77516", "2174", "40", "Male", "White", NEGATIVE],
    ["50", "Self-emp", "83311", "0", "13", "Male", "White", NEGATIVE],
    ["38", "Private", "215646", "0", "40", "Male", "Black", NEGATIVE],
    ["53", "Private", "234721", "0", "40", "Male", "Black", NEGATIVE],
    ["28", "Private", "338409", "0", "40", "Female", "Black", NEGATIVE],
    ["37", "?", "284582", "0", "40", "Female", "White", NEGATIVE],
    ["49", "Private", "160187", "14084", "16", "Female", "Black", POSITIVE],
    ["52", "Self-emp", "209642", "5178", "45", "Male", "White", POSITIVE],
]


@pytest.fixture
def raw_params() -> dict:
    """A fresh, mutable copy of the params mapping (tests edit it to make it invalid)."""
    return copy.deepcopy(RAW_PARAMS)


@pytest.fixture
def params(raw_params: dict) -> Params:
    return params_from_dict(raw_params)


@pytest.fixture
def columns() -> list[str]:
    """Declared columns in file order."""
    return list(COLUMNS)


@pytest.fixture
def raw_rows() -> list[list[str]]:
    """The eight raw rows as lists of strings (a fresh copy each test may edit)."""
    return [list(row) for row in RAW_ROWS]


@pytest.fixture
def raw_frame() -> pd.DataFrame:
    """The table as ``read_raw_table`` returns a CSV: strings only, nothing parsed."""
    return pd.DataFrame(RAW_ROWS, columns=COLUMNS, dtype=str)


@pytest.fixture
def write_csv(tmp_path: Path):
    """Write header + rows to a CSV file under tmp_path and return its path."""

    def _write(rows: list[list[str]], header: list[str] | None = None, name: str = "table.csv") -> Path:
        header = COLUMNS if header is None else header
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        return path

    return _write


@pytest.fixture
def cleaned_train() -> pd.DataFrame:
    """A cleaned training split (what ``clean_table`` yields): float numerics, string categoricals."""
    rng = np.random.default_rng(0)
    n = 40
    workclass = ["Private"] * 20 + ["Self-emp"] * 10 + ["State-gov"] * 6 + ["Never-worked"] + [None] * 3
    return pd.DataFrame(
        {
            "age": rng.normal(40, 12, n).round(),
            "workclass": pd.array(workclass, dtype="string"),
            "fnlwgt": rng.uniform(1e4, 1e6, n),
            "capital-gain": np.where(rng.random(n) < 0.2, rng.uniform(1e3, 1e5, n), 0.0),
            "hours-per-week": rng.normal(40, 8, n).round(),
            "sex": pd.array(["Male", "Female"] * (n // 2), dtype="string"),
            "race": pd.array(["White", "Black", "White", "Other"] * (n // 4), dtype="string"),
            LABEL: pd.array([NEGATIVE] * 30 + [POSITIVE] * 10, dtype="string"),
        }
    )
