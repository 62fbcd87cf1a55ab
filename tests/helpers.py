"""Plain helpers for tests (fixtures live in conftest.py files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairtrain.config import Params, params_from_dict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shrink_params(params: Params, **sections: dict) -> Params:
    """The real params with a few keys overridden per section (tests shrink the real config
    instead of keeping a second one)."""
    raw = params.model_dump(mode="json", by_alias=True)
    for section, overrides in sections.items():
        raw[section] = {**raw[section], **overrides}
    return params_from_dict(raw, source="test params")


def adult_sample(adult_raw: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """A reproducible random sample of the raw Adult rows."""
    return adult_raw.sample(n=rows, random_state=seed).reset_index(drop=True)


def quiet_trainer(max_epochs: int = 3, **options):
    """A CPU Lightning trainer with no logger, checkpoints or progress output."""
    import pytorch_lightning as pl

    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )
