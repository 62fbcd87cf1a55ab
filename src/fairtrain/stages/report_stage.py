"""The report stage: render the model card and attach it to the run."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.io import read_json, write_text
from fairtrain.reporting.model_card import render_model_card

log = logging.getLogger(__name__)

RECORDED = (
    "validation",
    "prepare",
    "augment",
    "train",
    "evaluation",
    "fairness",
    "attributions",
    "gates",
    "registered",
    "run",
)


def report_stage(params: Params, inputs: dict[str, Path], output_path: Path) -> str:
    """``inputs`` maps each name in ``RECORDED`` to the JSON file that stage wrote."""
    recorded = {name: read_json(inputs[name]) for name in RECORDED}
    card = render_model_card(params, recorded)
    with tracking.resume_run(tracking.RunRef.load(inputs["run"]), "report"):
        mlflow.log_text(card, f"model_card/{output_path.name}")
    write_text(output_path, card)
    log.info("model card written to %s and logged to run %s", output_path, recorded["run"]["run_id"])
    return card
