"""The ledger of labelled batches appended to a data file (``fairtrain append-batch``).

A module of its own, with no data-validation code, so that the validate stage can record the
ledger beside the data it validated (the model card lists those batches) without making the
batch-appending machinery part of its code.
"""

from __future__ import annotations

from pathlib import Path

from fairtrain.errors import DataValidationError
from fairtrain.io import read_json

# Beside the dataset (data/raw/adult.csv.gz → data/raw/adult.csv.gz.batches.json): which
# batch files were appended to it, so the same batch is not appended twice (a retraining rerun
# after a failed `dvc repro`, a forced rerun, a batch delivered again).
LEDGER_SUFFIX = ".batches.json"


def ledger_path(dataset_path: str | Path) -> Path:
    dataset_path = Path(dataset_path)
    return dataset_path.with_name(dataset_path.name + LEDGER_SUFFIX)


def ledger_entries(dataset_path: str | Path) -> list[dict]:
    """The batches appended to the dataset so far (none without a ledger)."""
    ledger = ledger_path(dataset_path)
    if not ledger.is_file():
        return []
    try:
        entries = read_json(ledger)["batches"]
        if not all(isinstance(entry, dict) and "sha256" in entry for entry in entries):
            raise TypeError("an entry is not an object with its sha256")
    except (ValueError, KeyError, TypeError) as error:  # a hand-edited or foreign file
        raise DataValidationError(
            f"{ledger}: not a batch ledger ({type(error).__name__}: {error}); expected the JSON "
            "that append-batch writes"
        ) from None
    return entries
