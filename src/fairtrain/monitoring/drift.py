"""Drift check: a new labelled batch against the training split's reference statistics.

Checks, each against a threshold from ``params.drift``:

- PSI (population stability index) per numeric column, on the reference's quantile bins plus a
  missing bin, and per categorical or boolean column, on its values plus ``<missing>`` and one
  ``<unseen>`` bucket for values training never had;
- KS (two-sample Kolmogorov-Smirnov statistic) per numeric column, exact against the bounded
  random sample of training values stored in the reference (``drift.reference.sample_size``),
  not approximated from quantiles: point masses (a money column that is mostly zero, say) make an
  interpolated CDF wrong exactly where it matters. The statistic is what is gated; its p-value
  is reported only (on batches of thousands of rows any tiny shift is "significant");
- the absolute change of the positive-label rate, overall and within each sensitive group
  (groups with fewer than ``min_group_size`` batch rows are reported, not checked).

The decision is ``retrain`` when at least ``min_drifted_checks`` checks drift.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from fairtrain.config import DatasetConfig, DriftConfig, ValidateConfig
from fairtrain.data.loading import read_raw_table
from fairtrain.data.reference_stats import (
    FORMAT_VERSION,
    MISSING,
    category_shares,
    label_rates,
    numeric_bin_shares,
    share_columns,
)
from fairtrain.data.validation import clean_table, validate_table
from fairtrain.errors import DataValidationError, FairtrainError

log = logging.getLogger(__name__)

UNSEEN = "<unseen>"
# PSI is undefined for an empty bin; both sides are floored at this share (a common choice).
PSI_FLOOR = 1e-4
RETRAIN, NO_RETRAIN = "retrain", "no_retrain"


def psi(reference: list[float], batch: list[float]) -> float:
    """Population stability index of two aligned share vectors: Σ (b − r) · ln(b / r)."""
    r = np.clip(np.asarray(reference, dtype=np.float64), PSI_FLOOR, None)
    b = np.clip(np.asarray(batch, dtype=np.float64), PSI_FLOOR, None)
    return float(np.sum((b - r) * np.log(b / r)))


def load_batch(
    path: str | Path, schema: DatasetConfig, settings: ValidateConfig | None = None
) -> pd.DataFrame:
    """Read a batch file like ``dataset.path`` and validate it against the same schema (label
    included: the label checks need it) with ``settings`` (``params.validation``; the built-in
    defaults when None); returns the typed, cleaned table."""
    frame = read_raw_table(path)
    # Every cell is checked as in validate, with the project's `validate:` settings; only a group
    # too small to audit is a warning here whatever small_group says: a batch is often small,
    # and the drift check reports (not gates) groups below its minimum.
    settings = (settings or ValidateConfig()).model_copy(update={"small_group": "warn"})
    report = validate_table(frame, schema, source=str(path), settings=settings)
    if not report.passed:
        raise DataValidationError(f"batch {path}: {report.summary()}")
    for warning in report.warnings:  # as the validate stage logs them; they never fail a batch
        if warning.check != "small_group":  # expected in a batch; the drift report lists them
            log.warning("batch %s: %s", path, warning.describe())
    return clean_table(frame, schema)


def _check(kind: str, column: str | None, value: float, threshold: float, **detail: object) -> dict:
    return {
        "kind": kind,
        "column": column,
        "value": value,
        "threshold": threshold,
        "drifted": bool(value > threshold),
        **detail,
    }


def numeric_checks(batch: pd.DataFrame, reference: dict, config: DriftConfig) -> list[dict]:
    checks = []
    for column, ref in reference["numeric"].items():
        values = batch[column].to_numpy(dtype=np.float64, na_value=np.nan)
        cuts = ref["bins"]["cut_points"]
        shares = numeric_bin_shares(values, cuts)
        checks.append(
            _check(
                "psi",
                column,
                psi(ref["bins"]["shares"], shares),
                config.psi_threshold,
                bins=[f"≤ {c:g}" for c in cuts] + [f"> {cuts[-1]:g}" if cuts else "all", MISSING],
                reference_shares=ref["bins"]["shares"],
                batch_shares=shares,
            )
        )
        present = values[~np.isnan(values)]
        if present.size and ref["sample"]:
            result = ks_2samp(present, np.asarray(ref["sample"], dtype=np.float64))
            checks.append(
                _check(
                    "ks",
                    column,
                    float(result.statistic),
                    config.ks_threshold,
                    p_value=float(result.pvalue),
                    reference_median=float(np.median(ref["sample"])),
                    batch_median=float(np.median(present)),
                )
            )
    return checks


def categorical_checks(batch: pd.DataFrame, reference: dict, config: DriftConfig) -> list[dict]:
    checks = []
    for column, ref in reference["categorical"].items():
        known = list(ref["shares"])
        batch_shares = category_shares(batch[column])
        unseen = {v: s for v, s in batch_shares.items() if v not in ref["shares"]}
        categories = [*known, UNSEEN]
        ref_vector = [ref["shares"][v] for v in known] + [0.0]
        batch_vector = [batch_shares.get(v, 0.0) for v in known] + [sum(unseen.values())]
        checks.append(
            _check(
                "psi",
                column,
                psi(ref_vector, batch_vector),
                config.psi_threshold,
                bins=categories,
                reference_shares=ref_vector,
                batch_shares=batch_vector,
                unseen_values=sorted(unseen)[:10],
            )
        )
    return checks


def label_checks(
    batch: pd.DataFrame, reference: dict, schema: DatasetConfig, config: DriftConfig
) -> list[dict]:
    ref, now = reference["labels"], label_rates(batch, schema)
    checks = [
        _check(
            "label_rate",
            schema.label,
            abs(now["positive_rate"] - ref["positive_rate"]),
            config.label_rate_threshold,
            reference_rate=ref["positive_rate"],
            batch_rate=now["positive_rate"],
        )
    ]
    for feature, groups in now["groups"].items():
        for group, row in groups.items():
            ref_row = ref["groups"].get(feature, {}).get(group)
            name = f"{feature}={group}"
            if ref_row is None or row["count"] < config.min_group_size:
                why = (
                    "not in the training split"
                    if ref_row is None
                    else f"fewer than {config.min_group_size} rows"
                )
                checks.append(
                    {
                        "kind": "group_label_rate",
                        "column": name,
                        "value": None,
                        "threshold": config.group_rate_threshold,
                        "drifted": False,
                        "skipped": f"not checked: {why} (batch n={row['count']})",
                        "reference_rate": None if ref_row is None else ref_row["positive_rate"],
                        "batch_rate": row["positive_rate"],
                        "batch_count": row["count"],
                    }
                )
                continue
            checks.append(
                _check(
                    "group_label_rate",
                    name,
                    abs(row["positive_rate"] - ref_row["positive_rate"]),
                    config.group_rate_threshold,
                    reference_rate=ref_row["positive_rate"],
                    batch_rate=row["positive_rate"],
                    batch_count=row["count"],
                )
            )
    return checks


def check_drift(
    batch: pd.DataFrame, reference: dict, schema: DatasetConfig, config: DriftConfig, source: str = "batch"
) -> dict:
    """Compare a typed batch with the reference; returns the report (JSON-ready) with the
    decision. The reference must describe the same columns as ``schema``."""
    if reference.get("format_version") != FORMAT_VERSION:
        raise FairtrainError(
            f"reference statistics have format_version {reference.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}; rerun `dvc repro prepare`"
        )
    expected = {"numeric": schema.numeric_features, "categorical": share_columns(schema)}
    for kind, columns in expected.items():
        if sorted(reference[kind]) != sorted(columns):
            raise FairtrainError(
                f"reference statistics describe {kind} columns {sorted(reference[kind])} but "
                f"params.yaml declares {sorted(columns)}; rerun `dvc repro prepare`"
            )
    checks = [
        *numeric_checks(batch, reference, config),
        *categorical_checks(batch, reference, config),
        *label_checks(batch, reference, schema, config),
    ]
    drifted = [c for c in checks if c["drifted"]]
    retrain = len(drifted) >= config.min_drifted_checks
    if drifted:
        worst = sorted(drifted, key=lambda c: -(c["value"] / c["threshold"]))[:5]
        listed = ", ".join(f"{c['kind']} {c['column']} {c['value']:.3f} > {c['threshold']}" for c in worst)
        more = ", …" if len(drifted) > 5 else ""
        reason = f"{len(drifted)} of {len(checks)} checks drifted ({listed}{more})"
    else:
        reason = f"none of {len(checks)} checks drifted"
    reason += f"; retraining needs at least {config.min_drifted_checks}"
    return {
        "batch": {"source": source, "rows": len(batch)},
        "reference": {"rows": reference["rows"], "split": reference["split"]},
        "thresholds": config.model_dump(mode="json", exclude={"reference"}),
        "checks": checks,
        "drifted_checks": len(drifted),
        "total_checks": len(checks),
        "decision": RETRAIN if retrain else NO_RETRAIN,
        "reason": reason,
    }


def format_value(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
