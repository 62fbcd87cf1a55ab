"""The evaluate stage: test metrics, fairness audit, attributions, gates; all into the run."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.data.preprocessing import Preprocessor, target_vector
from fairtrain.evaluation.attribution import integrated_gradients
from fairtrain.evaluation.fairness import fairness_audit
from fairtrain.evaluation.gates import evaluate_gates
from fairtrain.evaluation.metrics import classification_metrics, confusion_rows, roc_points
from fairtrain.io import json_safe, read_json, write_json, write_parquet
from fairtrain.models.export import load_model

log = logging.getLogger(__name__)
# The files evaluate writes, by name (the keys of ``outputs``).
OUTPUTS = ("evaluation", "fairness", "attributions", "gates", "roc", "confusion", "predictions")


def _nan_if_none(value: float | None) -> float:
    # MLflow metrics are floats; an undefined metric is NaN there (null in our JSON files).
    return float("nan") if value is None else value


def run_metrics(overall: dict, fairness: dict, attributions: dict) -> dict[str, float]:
    """Everything evaluate logs to MLflow as metrics, with MLflow-safe names."""
    metrics = {
        f"test_{k}": _nan_if_none(v) for k, v in overall.items() if k not in ("rows", "threshold", "timings")
    }
    for feature, audit in fairness.items():
        for name in ("demographic_parity_difference", "equalized_odds_difference"):
            metrics[tracking.metric_key("fairness", feature, name)] = _nan_if_none(audit[name])
        for group, row in audit["groups"].items():
            for name, value in row.items():
                metrics[tracking.metric_key("group", feature, group, name)] = _nan_if_none(value)
    for row in attributions["importance"]:
        metrics[tracking.metric_key("attribution", row["column"])] = row["share"]
    return metrics


def evaluate_stage(
    params: Params,
    test_path: Path,
    preprocessor_path: Path,
    model_dir: Path,
    run_ref_path: Path,
    outputs: dict[str, Path],
) -> dict:
    """``outputs`` maps every name in ``OUTPUTS`` to its path.

    Results go to the MLflow run first (from memory) and to the local files last, so a failure
    at any point leaves the previous local outputs untouched.
    """
    schema, settings = params.dataset, params.evaluate
    preprocessor = Preprocessor.from_dict(read_json(preprocessor_path))
    test = pd.read_parquet(test_path)
    features = preprocessor.transform(test)
    y_true = target_vector(test, schema).astype(np.int64)
    model = load_model(model_dir)
    proba = model.predict_proba(torch.from_numpy(features)).numpy().astype(np.float64)
    y_pred = (proba >= settings.threshold).astype(np.int64)

    timings = {}
    started = time.perf_counter()
    overall = classification_metrics(y_true, proba, settings.threshold)
    fairness = fairness_audit(y_true, y_pred, test, schema.sensitive_features, settings.min_group_size)
    timings["metrics_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    sample = rng.choice(len(test), size=min(settings.attribution_samples, len(test)), replace=False)
    attributions = integrated_gradients(
        model,
        features[np.sort(sample)],
        preprocessor.feature_groups,
        settings.ig_steps,
        settings.ig_internal_batch_size,
    )
    timings["attribution_seconds"] = time.perf_counter() - started
    gates = evaluate_gates(overall, fairness, settings.gates)
    overall["timings"] = {k: round(v, 3) for k, v in timings.items()}
    reports = {"evaluation": overall, "fairness": fairness, "attributions": attributions, "gates": gates}

    with tracking.resume_run(tracking.RunRef.load(run_ref_path), "evaluate"):
        mlflow.log_metrics(run_metrics(overall, fairness, attributions))
        mlflow.set_tag("fairtrain.gates", "passed" if gates["passed"] else "failed")
        for name, payload in reports.items():
            mlflow.log_dict(json_safe(payload), f"evaluation/{name}.json")

    predictions = (
        test[schema.sensitive_features].astype(str).assign(y_true=y_true, probability=proba, y_pred=y_pred)
    )
    write_parquet(outputs["predictions"], predictions)
    write_json(outputs["roc"], roc_points(y_true, proba))
    labels = [schema.negative_class, schema.positive_class]
    write_json(outputs["confusion"], confusion_rows(y_true, proba, settings.threshold, labels))
    for name, payload in reports.items():
        write_json(outputs[name], payload)
    log.info(
        "test ROC-AUC %.4f, accuracy %.4f; %s",
        _nan_if_none(overall["roc_auc"]),
        overall["accuracy"],
        gates["summary"],
    )
    return reports
