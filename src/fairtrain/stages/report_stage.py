"""The report stage: render the model card (Markdown + self-contained HTML), attach both to
the run."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.io import read_json, write_text
from fairtrain.reporting.model_card import render_model_card_files
from fairtrain.reporting.registry_context import registry_context

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
    "mitigation",
    "registered",
    "run",
)
# Inputs a card can do without: their section then says in one sentence that they are absent.
OPTIONAL = ("mitigation",)
ABSENT = {
    "mitigation": {
        "enabled": False,
        "reason": "no mitigation report was given to the report stage",
    },
}


def report_stage(
    params: Params,
    inputs: dict[str, Path],
    output_path: Path,
    html_path: Path | None = None,
    figures_dir: Path | None = None,
) -> str:
    """``inputs`` maps each name in ``RECORDED`` to the JSON file that stage wrote (those in
    ``OPTIONAL`` may be missing or None);
    ``figures_dir`` holds evaluate's PNGs and their ``index.json`` (optional). Writes the
    Markdown card to ``output_path`` and, when given, the HTML card to ``html_path``."""
    recorded = {
        name: ABSENT[name] if name in OPTIONAL and inputs.get(name) is None else read_json(inputs[name])
        for name in RECORDED
    }
    with tracking.resume_run(tracking.RunRef.load(inputs["run"]), "report"):
        context = registry_context(MlflowClient(), recorded["registered"])
        card, page = render_model_card_files(params, recorded, output_path, figures_dir, context)
        mlflow.log_text(card, f"model_card/{output_path.name}")
        if html_path is not None:
            mlflow.log_text(page, f"model_card/{html_path.name}")
    write_text(output_path, card)
    if html_path is not None:
        write_text(html_path, page)
    log.info("model card written to %s and logged to run %s", output_path, recorded["run"]["run_id"])
    return card
