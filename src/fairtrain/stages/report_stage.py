"""The report stage: render the model card (Markdown + self-contained HTML), attach both to
the run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.errors import FairtrainError
from fairtrain.io import read_stage_output, write_text
from fairtrain.reporting.model_card import render_model_card_files
from fairtrain.reporting.recorded import MissingRecordedKey, as_recorded
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
# The DVC stage that writes each input (dvc.yaml), named when an input is unreadable.
WRITTEN_BY = {
    "validation": "validate",
    "prepare": "prepare",
    "augment": "augment",
    "train": "train",
    "evaluation": "evaluate",
    "fairness": "evaluate",
    "attributions": "evaluate",
    "gates": "evaluate",
    "mitigation": "evaluate",
    "registered": "register",
    "run": "train",
}
# Inputs a card can do without: their section then says in one sentence that they are absent.
OPTIONAL = ("mitigation",)
ABSENT = {
    "mitigation": {
        "enabled": False,
        "reason": "no mitigation report was given to the report stage",
    },
}


def _rerun(name: str) -> str:
    stage = WRITTEN_BY[name]
    return f"it is written by the {stage} stage: rerun `dvc repro {stage}`"


def read_recorded(name: str, path: Path | None) -> dict:
    """The JSON object the stage that writes input ``name`` left at ``path``; a missing,
    unreadable or malformed file raises a ``FairtrainError`` naming the file and that stage."""
    if path is None:
        raise FairtrainError(f"no {name} input was given to the report stage; {_rerun(name)}")
    return read_stage_output(path, WRITTEN_BY[name], what=name, error=FairtrainError)


@contextmanager
def _naming_inputs(inputs: dict[str, Path | None]) -> Iterator[None]:
    """Turn a key missing from a recorded input into an error naming its file and stage."""
    try:
        yield
    except MissingRecordedKey as error:
        where = inputs.get(error.source) or f"the {error.source} input"
        raise FairtrainError(f"{where}: {error} (the model card needs it); {_rerun(error.source)}") from None


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
    Markdown card to ``output_path`` and, when given, the HTML card to ``html_path``.

    Every input is read and the card rendered before the MLflow run is reopened, so an
    unreadable input or a key the card needs but an input lacks fails naming the file (and the
    key) before anything is logged or written."""
    recorded = {
        name: as_recorded(
            name,
            ABSENT[name]
            if name in OPTIONAL and inputs.get(name) is None
            else read_recorded(name, inputs.get(name)),
        )
        for name in RECORDED
    }
    with _naming_inputs(inputs):
        tracking.configure_client()  # the registry's record of the version, from the run's store
        context = registry_context(MlflowClient(), recorded["registered"])
        card, page = render_model_card_files(params, recorded, output_path, figures_dir, context)
    with tracking.resume_run(tracking.RunRef.load(inputs["run"]), "report"):
        mlflow.log_text(card, f"model_card/{output_path.name}")
        if html_path is not None:
            mlflow.log_text(page, f"model_card/{html_path.name}")
    write_text(output_path, card)
    if html_path is not None:
        write_text(html_path, page)
    log.info("model card written to %s and logged to run %s", output_path, recorded["run"]["run_id"])
    return card
