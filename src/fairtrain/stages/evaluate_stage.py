"""The evaluate stage: test metrics, fairness audit, attributions, gates; all into the run."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.data.preprocessing import Preprocessor, target_vector
from fairtrain.errors import FairtrainError
from fairtrain.evaluation import mitigation as mitigate
from fairtrain.evaluation import plots
from fairtrain.evaluation.attribution import attribution_report
from fairtrain.evaluation.baseline import fit_baselines
from fairtrain.evaluation.bootstrap import bootstrap_metrics, default_metric_fns
from fairtrain.evaluation.calibration import calibration_curve_points
from fairtrain.evaluation.champion import non_regression, score_champion
from fairtrain.evaluation.fairness import fairness_audit
from fairtrain.evaluation.gates import evaluate_gates, unset_thresholds
from fairtrain.evaluation.metrics import classification_metrics, confusion_rows, roc_points
from fairtrain.evaluation.threshold import choose_threshold
from fairtrain.io import json_safe, json_text, read_json, replaced_together
from fairtrain.models.export import load_model

log = logging.getLogger(__name__)
# The files evaluate writes, by name (the keys of ``outputs``).
OUTPUTS = (
    "evaluation",
    "fairness",
    "attributions",
    "gates",
    "mitigation",
    "roc",
    "confusion",
    "calibration",
    "roc_groups",
    "pr_groups",
    "group_metrics",
    "attribution_bars",
    "figures",
    "predictions",
)


# The four disparity figures of every sensitive feature: logged to MLflow and copied into
# metrics/evaluation.json, whose numbers `dvc exp show` compares (`disparities` at the
# threshold; with mitigation on, also `served_disparities`, of the decisions served and gated).
# fairness.json and mitigation.json, with every group's figures, are outputs, not DVC metrics.
DISPARITIES = (
    "demographic_parity_difference",
    "equalized_odds_difference",
    "demographic_parity_ratio",
    "equalized_odds_ratio",
)


def _disparities(audit: dict) -> dict:
    """Each feature's four disparity figures (``DISPARITIES``) from a fairness audit."""
    return {feature: {name: row[name] for name in DISPARITIES} for feature, row in audit.items()}


def _nan_if_none(value: float | None) -> float:
    # MLflow metrics are floats; an undefined metric is NaN there (null in our JSON files).
    return float("nan") if value is None else value


def run_metrics(overall: dict, fairness: dict, attributions: dict) -> dict[str, float]:
    """Everything evaluate logs to MLflow as metrics, with MLflow-safe names."""
    metrics = {
        f"test_{k}": _nan_if_none(v)
        for k, v in overall.items()
        if isinstance(v, float | int | None) and k not in ("rows",)
    }
    for name, interval in overall.get("intervals", {}).items():
        for bound in ("lower", "upper"):
            metrics[f"test_{name}_ci_{bound}"] = _nan_if_none(interval[bound])
    for model, scores in overall.get("baselines", {}).items():
        for name in ("roc_auc", "accuracy", "log_loss"):
            metrics[tracking.metric_key("baseline", model, name)] = _nan_if_none(scores[name])
    for feature, audit in fairness.items():
        for name in DISPARITIES:
            metrics[tracking.metric_key("fairness", feature, name)] = _nan_if_none(audit[name])
        for group, row in audit["groups"].items():
            for name, value in row.items():
                if name != "undefined":
                    metrics[tracking.metric_key("group", feature, group, name)] = _nan_if_none(value)
    for row in attributions["importance"]:
        metrics[tracking.metric_key("attribution", row["column"])] = row["share"]
    if "convergence" in attributions:
        metrics["attribution_share_over_tolerance"] = attributions["convergence"]["share_over_tolerance"]
    if "cross_check" in attributions:
        rho = attributions["cross_check"]["spearman_rank_correlation"]
        metrics["attribution_rank_correlation"] = _nan_if_none(rho)
    return metrics


def _probabilities(model, preprocessor: Preprocessor, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(torch.from_numpy(preprocessor.transform(frame))).numpy().astype(np.float64)


def _intervals(result: dict) -> dict:
    """Bootstrap output → ``{metric: {"value", "lower", "upper"}}``: per group, this is where
    every metric's value is reported (ROC-AUC, PR-AUC, accuracy, F1, precision, recall, log
    loss, Brier, ECE)."""
    return {
        name: {
            "value": m["value"],
            "lower": m["lower"],
            "upper": m["upper"],
            **({"reason": m["reason"]} if m["reason"] else {}),
        }
        for name, m in result["metrics"].items()
    }


def _mitigation(params, model, preprocessor, val, y_val, test, y_true, proba, y_pred, threshold, fairness):
    """ThresholdOptimizer on validation when enabled: (report, served test decisions, audit
    the gates judge). Disabled: the threshold's decisions and the plain audit."""
    schema, settings = params.dataset, params.evaluate
    config = settings.mitigation
    if not config.enabled:
        return {"enabled": False, "reason": "evaluate.mitigation.enabled is false"}, y_pred, fairness
    raw_feature = config.sensitive_feature or schema.sensitive_features[0]
    # A binned numeric feature is mitigated per bin: its group labels are in `<feature>_group`.
    feature = schema.group_column(raw_feature) if raw_feature in schema.bins else raw_feature
    try:
        optimizer = mitigate.fit_optimizer(
            model, preprocessor.transform(val), y_val, val[feature].astype(str).to_numpy(), config
        )
    except ValueError as error:
        raise FairtrainError(
            f"evaluate.mitigation: ThresholdOptimizer ({config.constraint}, {feature}) could not be "
            f"fitted on the validation split: {error}"
        ) from None
    rule = mitigate.rule_from_optimizer(optimizer, config, raw_feature, threshold)
    if raw_feature in schema.bins:  # the served model bins the raw value the same way
        rule["bins"] = schema.bins[raw_feature].model_dump(mode="json")
    served = mitigate.apply_rule(rule, proba, test[feature].astype(str).to_numpy())
    comparison, audit_after = mitigate.compare(
        y_true, y_pred, served, test, schema.group_columns, settings.min_group_size
    )
    report = {
        "enabled": True,
        "fitted_on": "validation split",
        "evaluated_on": "test split",
        "rule": rule,
        **comparison,
    }
    return report, served, audit_after


def evaluate_stage(
    params: Params,
    train_path: Path,
    val_path: Path,
    test_path: Path,
    preprocessor_path: Path,
    model_dir: Path,
    run_ref_path: Path,
    outputs: dict[str, Path],
) -> dict:
    """``outputs`` maps every name in ``OUTPUTS`` to its path.

    The decision threshold is chosen on the validation split and only then applied to test.
    Results go to the MLflow run first (from memory) and to the local files last, all put in
    place together once every one is written, so a failure at any point leaves the previous
    local outputs untouched.
    """
    schema, settings = params.dataset, params.evaluate
    if unset := unset_thresholds(settings.gates):
        log.warning(
            "evaluate.gates leaves out %s: those gates fall back to %s and pass any defined value",
            ", ".join(unset),
            ", ".join(f"{k} {v}" for k, v in unset.items()),
        )
    preprocessor = Preprocessor.from_dict(read_json(preprocessor_path))
    model = load_model(model_dir)
    val, test = pd.read_parquet(val_path), pd.read_parquet(test_path)
    y_val = target_vector(val, schema).astype(np.int64)
    y_true = target_vector(test, schema).astype(np.int64)
    proba = _probabilities(model, preprocessor, test)
    try:
        choice = choose_threshold(
            y_val,
            _probabilities(model, preprocessor, val),
            settings.threshold_rule,
            settings.threshold if settings.threshold_rule == "fixed" else settings.threshold_target,
        )
    except ValueError as error:
        raise FairtrainError(f"evaluate.threshold_rule on the validation split: {error}") from None
    threshold = float(choice["threshold"])
    y_pred = (proba >= threshold).astype(np.int64)

    timings = {}
    started = time.perf_counter()
    overall = classification_metrics(y_true, proba, threshold)
    overall["threshold_choice"] = choice
    fairness = fairness_audit(y_true, y_pred, test, schema.group_columns, settings.min_group_size, proba)
    overall["disparities"] = _disparities(fairness)
    timings["metrics_seconds"] = time.perf_counter() - started

    if settings.bootstrap_resamples:
        started = time.perf_counter()
        boot = {
            "n_resamples": settings.bootstrap_resamples,
            "level": settings.confidence_level,
            "seed": settings.seed,
            "metric_fns": default_metric_fns(),
        }
        overall["intervals"] = _intervals(bootstrap_metrics(y_true, proba, threshold, **boot)["overall"])
        overall["interval_method"] = (
            f"percentile bootstrap, {settings.bootstrap_resamples} resamples, "
            f"level {settings.confidence_level}"
        )
        for feature in schema.group_columns:
            by_group = bootstrap_metrics(
                y_true, proba, threshold, groups=test[feature].astype(str).to_numpy(), **boot
            )["by_group"]
            fairness[feature]["intervals"] = {group: _intervals(r) for group, r in by_group.items()}
        timings["bootstrap_seconds"] = time.perf_counter() - started

    train = pd.read_parquet(train_path)
    train_features = preprocessor.transform(train)
    if settings.baselines:
        started = time.perf_counter()
        overall["baselines"] = fit_baselines(
            train_features,
            target_vector(train, schema),
            preprocessor.transform(test),
            y_true,
            settings.seed,
        )
        timings["baseline_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(len(test), size=min(settings.attribution_samples, len(test)), replace=False))
    explained = test.iloc[sample]
    attributions, parts = attribution_report(
        model,
        preprocessor.transform(explained),
        sample,
        preprocessor.feature_groups,
        train_features,
        {f: explained[f].astype(str).to_numpy() for f in schema.group_columns},
        settings,
        settings.min_group_size,
        settings.confidence_level,
        settings.seed,
    )
    timings["attribution_seconds"] = time.perf_counter() - started
    attributions["timings"] = {k: round(v, 3) for k, v in parts.items()}
    if not attributions["convergence"]["passed"]:
        log.warning("attributions: %s", attributions["convergence"]["reason"])

    # The decisions that will be served: the threshold's, or the mitigated rule's.
    started = time.perf_counter()
    mitigation, served, gate_fairness = _mitigation(
        params, model, preprocessor, val, y_val, test, y_true, proba, y_pred, threshold, fairness
    )
    timings["mitigation_seconds"] = time.perf_counter() - started
    if mitigation["enabled"]:  # the decisions served and gated: what an experiment compares
        overall["served_disparities"] = _disparities(gate_fairness)

    started = time.perf_counter()
    nonreg = settings.gates.champion_non_regression
    champion = None
    if nonreg.enabled:
        tracking.configure_client()
        champion = score_champion(params.registry.model_name, test, schema)
    gated = [f for f in schema.group_columns if fairness.get(f, {}).get("gated", True)]
    regression = non_regression(
        y_true,
        proba,
        served,
        champion,
        test,
        gated,
        settings.min_group_size,
        nonreg,
        settings.bootstrap_resamples,
        settings.confidence_level,
        settings.seed,
    )
    timings["champion_seconds"] = time.perf_counter() - started
    gates = evaluate_gates(overall, gate_fairness, settings.gates, regression)
    gates["decisions"] = "mitigated rule" if mitigation["enabled"] else "decision threshold"

    started = time.perf_counter()
    plot_data = {
        "roc_groups": plots.curves("roc", y_true, proba, test, schema.group_columns),
        "pr_groups": plots.curves("pr", y_true, proba, test, schema.group_columns),
        "group_metrics": plots.group_metric_bars(fairness, overall, schema.group_columns),
        "attribution_bars": plots.attribution_bars(attributions),
    }
    labels = [schema.negative_class, schema.positive_class]
    scratch = Path(tempfile.mkdtemp(prefix="fairtrain-figures-"))
    try:
        plots.write_figures(
            scratch,
            y_true,
            proba,
            y_pred,
            test,
            schema.group_columns,
            labels,
            plot_data["group_metrics"],
            plot_data["attribution_bars"],
            settings.confidence_level,
            choice,
        )
        timings["plots_seconds"] = time.perf_counter() - started
        overall["timings"] = {k: round(v, 3) for k, v in timings.items()}
        reports = {
            "evaluation": overall,
            "fairness": fairness,
            "attributions": attributions,
            "gates": gates,
            "mitigation": mitigation,
        }

        with tracking.resume_run(tracking.RunRef.load(run_ref_path), "evaluate"):
            mlflow.log_metrics(run_metrics(overall, fairness, attributions))
            mlflow.set_tag("fairtrain.gates", "passed" if gates["passed"] else "failed")
            for name, payload in reports.items():
                mlflow.log_dict(json_safe(payload), f"evaluation/{name}.json")
            mlflow.log_artifacts(str(scratch), "evaluation/figures")

        predictions = (
            test[schema.group_columns].astype(str).assign(y_true=y_true, probability=proba, y_pred=y_pred)
        )
        if mitigation["enabled"]:
            predictions["y_pred_mitigated"] = served
        payloads = {
            "roc": roc_points(y_true, proba),
            **plot_data,
            "confusion": confusion_rows(y_true, proba, threshold, labels),
            "calibration": calibration_curve_points(y_true, proba),
            **reports,
        }
        # Every output is written beside its target first and all are put in place only
        # once the last one is written: a failure before that (a full disk) leaves the
        # previous outputs, all of one run, as they were, and not a mix the model card
        # would quote side by side.
        with replaced_together() as staged:
            figures = staged.folder(outputs["figures"])
            for path in scratch.iterdir():
                shutil.copy2(path, figures / path.name)
            predictions.to_parquet(staged.file(outputs["predictions"]), index=False)
            for name, payload in payloads.items():
                staged.file(outputs[name]).write_text(json_text(payload))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "test ROC-AUC %.4f, accuracy %.4f; %s",
        _nan_if_none(overall["roc_auc"]),
        overall["accuracy"],
        gates["summary"],
    )
    return reports
