"""Per-group non-regression against the registry's current champion.

Method. The champion's registered pyfunc (``models:/<name>@champion``) is loaded in a child
Python, with the code it was registered with, and scores the *current* test split's raw rows,
so challenger and champion are compared on exactly the same rows (a champion's own recorded
metrics may come from another split or another data version).
For every gated sensitive feature and every group with at least ``min_group_size`` test rows,
the champion's metric gets a percentile bootstrap interval over that group's rows (the same
resampling as ``bootstrap.bootstrap_metrics``, seeded by the group's name). The challenger
fails the group when its point value lies beyond the champion's interval on the bad side:
below the lower bound for a higher-is-better metric (ROC-AUC), above the upper bound for a
lower-is-better one (log loss, Brier). A drop inside the champion's interval is sampling noise
on a test set of this size and passes.

Label-based metrics (accuracy, F1, ...) use each model's own served decisions: the champion's
``label`` column, the challenger's decisions at its threshold.

No champion (a new registry) → the check is skipped and passes, with the reason recorded.

The result also carries the champion's overall metrics on this split (``champion_overall``,
named as in ``evaluation.json``): the register stage compares the challenger's promotion metric
with those, not with the champion's own run metrics, which may be from another split.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import sklearn.metrics as skm
from mlflow.tracking import MlflowClient

from fairtrain.config import GROUP_GATE_METRICS, PRIMARY_METRICS, DatasetConfig, NonRegressionConfig
from fairtrain.evaluation.bootstrap import _bootstrap, _group_seed, default_metric_fns
from fairtrain.evaluation.metrics import classification_metrics, finite
from fairtrain.scoring import score_with_its_own_code
from fairtrain.tracking import version_by_alias

log = logging.getLogger(__name__)
CHAMPION_ALIAS = "champion"  # = registry.promotion.CHAMPION (not imported: registry imports evaluation)


def serving_rows(frame: pd.DataFrame, schema: DatasetConfig) -> pd.DataFrame:
    """Rows as a user sends them to the served model: raw feature columns, numbers as floats,
    missing categories written with the file's missing-value marker."""
    rows = frame[schema.feature_columns].copy()
    marker = schema.missing_values[0] if schema.missing_values else ""
    for column in schema.numeric_features:
        rows[column] = rows[column].astype("float64")
    for column in schema.categorical_features:
        rows[column] = rows[column].astype(object).where(rows[column].notna(), marker)
    return rows.reset_index(drop=True)


def score_champion(model_name: str, frame: pd.DataFrame, schema: DatasetConfig) -> dict | None:
    """The champion's version, probabilities and decisions on ``frame``; None without one.

    Assumes MLflow already points at the store (``tracking.configure_client``).
    """
    version = version_by_alias(MlflowClient(), model_name, CHAMPION_ALIAS)
    if version is None:
        return None
    try:
        uri = f"models:/{model_name}/{version.version}"  # the version looked up, even if the alias moves
        scored = score_with_its_own_code(uri, serving_rows(frame, schema))
    except Exception as error:  # any failure to load or score: the gate fails closed, saying why
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        log.warning("champion v%s could not score the test split: %s", version.version, first_line)
        return {"version": str(version.version), "run_id": version.run_id, "error": first_line}
    return {
        "version": str(version.version),
        "run_id": version.run_id,
        "probability": scored["probability"].to_numpy(dtype=np.float64),
        "y_pred": (scored["label"].astype(str) == schema.positive_class).to_numpy().astype(np.int64),
    }


def _skipped(settings: NonRegressionConfig, reason: str, **extra) -> dict:
    return {"status": "skipped", "reason": reason, "metric": settings.metric, "groups": [], **extra}


def champion_overall(y_true: np.ndarray, champion: dict) -> dict[str, float | None]:
    """The champion's overall value of every promotion metric (``config.PRIMARY_METRICS``) on
    these rows, computed as ``classification_metrics`` computes the challenger's; the
    label-based ones from the champion's own served decisions. None where undefined."""
    y = np.asarray(y_true).astype(np.int64)
    scores = classification_metrics(y, champion["probability"], 0.5)
    decisions = np.asarray(champion["y_pred"]).astype(np.int64)
    scores["accuracy"] = finite(skm.accuracy_score(y, decisions))
    for name, fn in (("f1", skm.f1_score), ("precision", skm.precision_score), ("recall", skm.recall_score)):
        scores[name] = finite(fn(y, decisions, zero_division=0))
    return {name: scores[name] for name in PRIMARY_METRICS}


def non_regression(
    y_true: np.ndarray,
    proba: np.ndarray,
    y_pred: np.ndarray,
    champion: dict | None,
    frame: pd.DataFrame,
    features: list[str],
    min_group_size: int,
    settings: NonRegressionConfig,
    n_resamples: int,
    level: float,
    seed: int,
) -> dict:
    """Challenger vs champion per gated group (see the module docstring). JSON-ready::

    {"status": "compared" | "skipped" | "unavailable", "reason", "metric", "champion_version", "method",
     "champion_overall": {primary metric: value on this split},
     "groups": [{"feature", "group", "rows", "challenger", "champion", "champion_lower",
                 "champion_upper", "passed", "reason"}]}

    ``champion_version`` is null when the registry had no champion, and absent when the check
    is disabled (the registry was not asked).
    """
    if not settings.enabled:
        return _skipped(settings, "disabled (evaluate.gates.champion_non_regression.enabled: false)")
    if champion is None:
        return _skipped(
            settings, "no champion in the registry yet: nothing to regress from", champion_version=None
        )
    if "error" in champion:
        return {
            "status": "unavailable",
            "reason": (
                f"champion v{champion['version']} could not be loaded or could not score the test split "
                f"({champion['error']}); fix or roll back the champion, or disable the check"
            ),
            "metric": settings.metric,
            "champion_version": champion["version"],
            "groups": [],
        }
    metric = settings.metric
    higher = GROUP_GATE_METRICS[metric]
    fns = {metric: default_metric_fns()[metric]}
    y = np.asarray(y_true).astype(np.int64)
    resamples = n_resamples or 0
    groups = []
    for feature in features:
        labels = frame[feature].astype(str).to_numpy()
        for group in sorted(np.unique(labels).tolist()):
            rows = labels == group
            count = int(rows.sum())
            if count < min_group_size:
                continue
            mine = finite(fns[metric](y[rows], proba[rows], y_pred[rows]))
            theirs_p, theirs_pred = champion["probability"][rows], champion["y_pred"][rows]
            theirs = finite(fns[metric](y[rows], theirs_p, theirs_pred))
            lower = upper = theirs
            if resamples:
                rng = np.random.default_rng(_group_seed(seed, f"{feature}={group}"))
                boot = _bootstrap(y[rows], theirs_p, theirs_pred, fns, resamples, level, rng)
                lower, upper = boot["metrics"][metric]["lower"], boot["metrics"][metric]["upper"]
            entry = {
                "feature": feature,
                "group": group,
                "rows": count,
                "challenger": mine,
                "champion": theirs,
                "champion_lower": lower,
                "champion_upper": upper,
            }
            bound = lower if higher else upper
            if mine is None or bound is None or (isinstance(bound, float) and math.isnan(bound)):
                entry["passed"] = False  # fail closed: an unmeasurable group cannot be cleared
                entry["reason"] = (
                    f"{metric} for {feature}={group} cannot be compared (challenger {mine}, "
                    f"champion bound {bound}): undefined on its {count} rows"
                )
            else:
                passed = mine >= bound if higher else mine <= bound
                side = "lower" if higher else "upper"
                verdict = "within or better than" if passed else "worse than"
                entry["passed"] = bool(passed)
                entry["reason"] = (
                    f"{feature}={group}: challenger {metric} {mine:.4f} is {verdict} champion "
                    f"v{champion['version']} {theirs:.4f} (interval {side} bound {bound:.4f}, {count} rows)"
                )
            groups.append(entry)
    method = (
        f"champion rescored on this test split; fail when the challenger's group value is beyond the "
        f"champion's {level:.0%} percentile bootstrap interval ({resamples} resamples) on the worse side"
        if resamples
        else "champion rescored on this test split; bootstrap off, so any drop in a group fails"
    )
    return {
        "status": "compared",
        "reason": f"compared with champion v{champion['version']} on {len(groups)} group(s)",
        "metric": metric,
        "champion_version": champion["version"],
        "champion_run_id": champion["run_id"],
        "champion_overall": champion_overall(y, champion),
        "method": method,
        "groups": groups,
    }
