"""The registered champion behind the real ``mlflow models serve`` REST server.

A model goes through the real evaluate and register stages into a temporary SQLite store;
then ``mlflow models serve -m models:/<name>@champion`` runs as a subprocess on a free
loopback port and is sent raw Adult rows as JSON, the way a client of the deployed model
would send them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import mlflow
import pandas as pd
import pytest
import requests

from tests.integration.pipeline import run_after_training
from tests.integration.servers import free_port, mlflow_cli, running_server

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60
ROWS = 25


@pytest.fixture
def champion(lenient, prepared, mlflow_store, tmp_path) -> dict:
    """A model registered as champion of the tmp SQLite store."""
    result = run_after_training(lenient, prepared, tmp_path / "run", epochs=3)
    assert result["record"]["promoted"], result["record"]
    return {**result, "uri": f"models:/{lenient.registry.model_name}@champion"}


@pytest.fixture
def served(champion, mlflow_store, tmp_path) -> Iterator[str]:
    """``mlflow models serve`` for the champion on a free loopback port; yields its base URL."""
    port = free_port()
    log = tmp_path / "serve.log"
    command, env = mlflow_cli(
        ["models", "serve", "-m", champion["uri"], "--env-manager", "local"],
        port,
        {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store},
    )
    base = f"http://127.0.0.1:{port}"
    with running_server(command, env, tmp_path, log, f"{base}/ping", START_TIMEOUT_S):
        yield base


def raw_rows(adult_raw: pd.DataFrame, params, rows: int) -> pd.DataFrame:
    """Raw CSV rows without the label: numeric columns as numbers, '?' markers kept, the
    extra ``fnlwgt`` column included."""
    frame = adult_raw.drop(columns=[params.dataset.label]).head(rows).copy()
    numeric = [c for c, kind in params.dataset.columns.items() if kind == "numeric"]
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column])
    return frame


def split_payload(frame: pd.DataFrame) -> dict:
    """``dataframe_split`` JSON with plain Python values (ints stay JSON integers)."""
    data = [[value.item() if hasattr(value, "item") else value for value in row] for row in frame.to_numpy()]
    return {"dataframe_split": {"columns": list(frame.columns), "data": data}}


def invoke(base: str, payload: dict) -> requests.Response:
    return requests.post(
        f"{base}/invocations",
        data=json.dumps(payload),
        headers={"Content-Type": "application/json"},
        timeout=REQUEST_TIMEOUT_S,
    )


def test_champion_served_over_rest_matches_in_process_predictions(served, champion, lenient, adult_raw):
    rows = raw_rows(adult_raw, lenient, ROWS)
    assert "fnlwgt" in rows.columns  # not a feature: the server must ignore it
    assert (rows == "?").any().any(), "the sample should include missing-value markers"
    schema = lenient.dataset

    # Raw rows in, one prediction per row out, the same numbers as in-process.
    response = invoke(served, split_payload(rows))
    assert response.status_code == 200, response.text
    served_predictions = pd.DataFrame(response.json()["predictions"])
    assert list(served_predictions.columns) == ["probability", "label"]
    assert len(served_predictions) == ROWS
    assert served_predictions["probability"].between(0, 1).all()
    assert set(served_predictions["label"]) <= set(schema.label_values)
    expected_labels = [
        schema.positive_class if p >= lenient.evaluate.threshold else schema.negative_class
        for p in served_predictions["probability"]
    ]
    assert served_predictions["label"].tolist() == expected_labels
    local = mlflow.pyfunc.load_model(champion["uri"]).predict(rows)
    assert served_predictions["probability"].to_numpy() == pytest.approx(
        local["probability"].to_numpy(), abs=1e-6
    )
    assert served_predictions["label"].tolist() == local["label"].tolist()

    # An unseen category is answered (it falls into the shared "other" slot), not an error.
    unseen = rows.copy()
    unseen.loc[0, "native-country"] = "Atlantis"
    response = invoke(served, split_payload(unseen))
    assert response.status_code == 200, response.text
    answered = response.json()["predictions"]
    assert len(answered) == ROWS
    assert 0 <= answered[0]["probability"] <= 1
    assert answered[0]["label"] in schema.label_values
    # The other rows are untouched by the change.
    assert [p["probability"] for p in answered[1:]] == pytest.approx(
        served_predictions["probability"].tolist()[1:], abs=1e-9
    )

    # A required column missing: MLflow's schema enforcement answers 400 and names it.
    response = invoke(served, split_payload(rows.drop(columns=["age"])))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert body["error_class"] == "SCHEMA_ENFORCEMENT_FAILED"
    assert body["message"].startswith("Failed to predict data ")
    assert body["message"].endswith(
        "Error: Model is missing inputs ['age']. Note that there were extra inputs: ['fnlwgt']."
    )

    # A word in a numeric column: columns are typed Any in the signature, so the value
    # reaches the model, whose preprocessor rejects it as an MLflow parameter error: a 400
    # whose message names the column and the value, with no server traceback.
    bad = rows.astype({"hours-per-week": object})
    bad.loc[1, "hours-per-week"] = "forty"
    response = invoke(served, split_payload(bad))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "column 'hours-per-week': 1 value(s) are not finite numbers, e.g. ['forty']" in body["message"]
    assert "Traceback" not in body.get("stack_trace", "")
