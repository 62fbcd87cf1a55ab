"""Plain helpers for tests (fixtures live in conftest.py files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from fairtrain.config import Params, params_from_dict

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The GPU path's tests run where CUDA is (`pytest -m gpu` on a GPU machine) and skip elsewhere.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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


def quiet_trainer(max_epochs: int = 3, accelerator: str = "cpu", **options):
    """A Lightning trainer (CPU unless told) with no logger, checkpoints or progress output."""
    from fairtrain.lightning import pl

    defaults = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return pl.Trainer(
        max_epochs=max_epochs, accelerator=accelerator, enable_model_summary=False, **(defaults | options)
    )
