"""Plain helpers for tests (fixtures live in conftest.py files)."""

from __future__ import annotations

import os
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


def undo_mlflow_state_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """Have ``monkeypatch``'s undo put MLflow's process-wide state back as it is now; call it
    before anything changes that state. That state is the environment variables MLflow and
    ``fairtrain.tracking`` write (``mlflow.set_tracking_uri`` and ``mlflow.set_experiment``
    export theirs for subprocesses, ``tracking.configure_client`` sets bounded HTTP retries)
    and the active experiment id. The tracking URI global is the caller's to reset, with
    ``mlflow.set_tracking_uri(None)`` before the undo: MLflow then reads it from the restored
    environment again."""
    import mlflow.tracking.fluent as fluent

    from fairtrain.tracking import HTTP_DEFAULTS, TRACKING_URI_ENV

    for name in (TRACKING_URI_ENV, "MLFLOW_EXPERIMENT_ID", *HTTP_DEFAULTS):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:  # recorded as unset (so the undo removes it), then removed again at once
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
