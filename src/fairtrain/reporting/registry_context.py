"""What the MLflow registry recorded about a model version, for its card: the lineage tags
and the previous champion's test metrics beside this run's."""

from __future__ import annotations

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

# Lineage tags worth showing a reviewer (the register stage writes these and version.<lib>).
LINEAGE_TAGS = ("git_commit", "git_dirty", "data_path", "data_sha256", "params_sha256", "dvc_model_md5")
COMPARED_PREFIXES = ("test_", "fairness/")


def lineage(client: MlflowClient, name: str, version: str) -> dict | None:
    try:
        record = client.get_model_version(name, version)
    except MlflowException:
        return None
    tags = {k: record.tags[k] for k in LINEAGE_TAGS if k in record.tags}
    tags |= {k: v for k, v in sorted(record.tags.items()) if k.startswith("version.")}
    created = pd.Timestamp(record.creation_timestamp, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
    return {"created": created, "tags": tags}


def champion_comparison(client: MlflowClient, registered: dict) -> dict:
    """This run's test and fairness metrics beside those of the champion it was judged against
    (``registered["previous_champion"]``); no rows when there was none or it is this version.

    Each run logged its metrics on its own test split: after a retraining on appended data the
    two splits differ. The ``data_sha256`` lineage tag of both versions (None where the
    registry has none) lets the card say whether the data file did."""
    previous = registered.get("previous_champion")
    if previous is None or str(previous) == str(registered["version"]):
        return {"previous_version": None, "rows": []}
    try:
        other = client.get_model_version(registered["model_name"], str(previous))
        this = client.get_model_version(registered["model_name"], str(registered["version"]))
        theirs = client.get_run(other.run_id).data.metrics
        ours = client.get_run(registered["run_id"]).data.metrics
    except MlflowException:
        return {"previous_version": None, "rows": []}
    rows = [
        {"metric": key, "this": ours[key], "previous": theirs[key], "difference": ours[key] - theirs[key]}
        for key in sorted(set(ours) & set(theirs))
        if key.startswith(COMPARED_PREFIXES)
    ]
    return {
        "previous_version": str(previous),
        "previous_run_id": other.run_id,
        "rows": rows,
        "data_sha256": (this.tags or {}).get("data_sha256"),
        "previous_data_sha256": (other.tags or {}).get("data_sha256"),
    }


def registry_context(client: MlflowClient, registered: dict) -> dict:
    return {
        "lineage": lineage(client, registered["model_name"], str(registered["version"])),
        "comparison": champion_comparison(client, registered),
    }
