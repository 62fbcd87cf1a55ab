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
from fairtrain.data.preprocessing import Preprocessor
from fairtrain.evaluation.attribution import integrated_gradients
from fairtrain.evaluation.fairness import fairness_audit
from fairtrain.evaluation.gates import evaluate_gates
from fairtrain.evaluation.metrics import classification_metrics, confusion_rows, roc_points
from fairtrain.io import read_json, write_json, write_parquet
from fairtrain.models.export import load_model

log = logging.getLogger(__name__)


def evaluate_stage(
    params: Params,
    test_path: Path,
    preprocessor_path: Path,
    model_dir: Path,
    run_ref_path: Path,
    outputs: dict[str, Path],
) -> dict:
    """``outputs`` keys: evaluation, fairness, attributions, gates, roc, confusion, predictions."""
    schema, settings = params.dataset, params.evaluate
    preprocessor = Preprocessor.from_dict(read_json(preprocessor_path))
    test = pd.read_parquet(test_path)
    features = preprocessor.transform(test)
    y_true = (test[schema.label] == schema.positive_class).to_numpy(np.int64)
    model = load_model(model_dir)
    with torch.no_grad():
        proba = torch.sigmoid(model(torch.from_numpy(features))).numpy().astype(np.float64)
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

    predictions = (
        test[schema.sensitive_features].astype(str).assign(y_true=y_true, probability=proba, y_pred=y_pred)
    )
    write_parquet(outputs["predictions"], predictions)
    write_json(outputs["evaluation"], overall)
    write_json(outputs["fairness"], fairness)
    write_json(outputs["attributions"], attributions)
    write_json(outputs["gates"], gates)
    write_json(outputs["roc"], roc_points(y_true, proba))
    labels = [schema.negative_class, schema.positive_class]
    write_json(outputs["confusion"], confusion_rows(y_true, proba, settings.threshold, labels))

    with tracking.resume_run(tracking.RunRef.load(run_ref_path)):
        mlflow.log_metrics(
            {f"test_{k}": v for k, v in overall.items() if isinstance(v, float) and k != "threshold"}
        )
        for feature, audit in fairness.items():
            mlflow.log_metrics(
                {
                    tracking.metric_key("fairness", feature, "demographic_parity_difference"): audit[
                        "demographic_parity_difference"
                    ]
                    or float("nan"),
                    tracking.metric_key("fairness", feature, "equalized_odds_difference"): audit[
                        "equalized_odds_difference"
                    ]
                    or float("nan"),
                    **{
                        tracking.metric_key("group", feature, group, name): float("nan")
                        if value is None
                        else value
                        for group, row in audit["groups"].items()
                        for name, value in row.items()
                    },
                }
            )
        mlflow.log_metrics(
            {
                tracking.metric_key("attribution", row["column"]): row["share"]
                for row in attributions["importance"]
            }
        )
        mlflow.set_tag("fairtrain.gates", "passed" if gates["passed"] else "failed")
        for key in ("evaluation", "fairness", "attributions", "gates"):
            mlflow.log_artifact(str(outputs[key]), "evaluation")
    log.info(
        "test ROC-AUC %.4f, accuracy %.4f; %s",
        overall["roc_auc"] or float("nan"),
        overall["accuracy"],
        gates["summary"],
    )
    return {"overall": overall, "fairness": fairness, "attributions": attributions, "gates": gates}
