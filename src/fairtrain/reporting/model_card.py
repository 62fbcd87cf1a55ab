"""Build the model card from recorded outputs only: every number comes from a metrics file
(or, for lineage and the champion comparison, from the MLflow registry the run was logged to).

One template gives both forms: Markdown (figures linked by relative path) and a self-contained
HTML page (the same Markdown rendered, figures embedded as base64 data URIs, no external
resource of any kind), so the two never disagree.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from markdown_it import MarkdownIt

from fairtrain.config import DatasetConfig, Params
from fairtrain.errors import FairtrainError
from fairtrain.registry.promotion import rescored_champion
from fairtrain.reporting.recorded import CardUndefined, as_recorded

TEMPLATES = Path(__file__).parent / "templates"
# Where evaluate's figures may go (plots/figures/index.json "section").
FIGURE_SECTIONS = ("metrics", "quantitative_analyses", "model_examination")
FIGURE_INDEX = "index.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Figure:
    """One entry of ``plots/figures/index.json`` and the PNG it names."""

    file: str
    title: str
    section: str
    caption: str
    path: Path

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


def load_figures(directory: Path | None) -> list[Figure]:
    """The figures listed in ``directory/index.json``: a list of {"file", "title", "section",
    "caption"}. No directory or no index means no figures; a bad entry raises naming it."""
    if directory is None or not (Path(directory) / FIGURE_INDEX).is_file():
        return []
    index = Path(directory) / FIGURE_INDEX
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FairtrainError(f"{index}: not readable JSON ({error})") from None
    if not isinstance(entries, list):
        raise FairtrainError(f"{index}: expected a list of figures, got {type(entries).__name__}")
    figures = []
    for i, entry in enumerate(entries):
        where = f"{index} entry {i}"
        fields = ("file", "title", "section", "caption")
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), str) for k in fields):
            raise FairtrainError(
                f"{where}: expected an object with string fields {list(fields)}, got {entry!r}"
            )
        name = entry["file"]
        # A plain file name inside the folder: the index must not pull other files into the card.
        if Path(name).name != name or not name.lower().endswith(".png"):
            raise FairtrainError(f"{where}: file {name!r} must be a .png file name inside {directory}")
        if entry["section"] not in FIGURE_SECTIONS:
            raise FairtrainError(
                f"{where}: section {entry['section']!r} is not one of {list(FIGURE_SECTIONS)}"
            )
        path = Path(directory) / name
        if not path.is_file():
            raise FairtrainError(f"{where}: {path} does not exist")
        with open(path, "rb") as handle:
            if handle.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise FairtrainError(f"{where}: {path} is not a PNG image")
        figures.append(Figure(name, entry["title"], entry["section"], entry["caption"], path))
    return figures


def label_balance(augment: dict, positive_class: str) -> list[dict]:
    """Rows and positive-label rate per sensitive group, before and after augmentation, from the
    label × group cell counts the augment stage recorded."""
    table: dict[tuple[str, str], dict] = {}
    for stage in ("before", "after"):
        for cell in augment.get(f"cells_{stage}", []):
            row = table.setdefault(
                (cell["feature"], cell["group"]), {"feature": cell["feature"], "group": cell["group"]}
            )
            row[f"rows_{stage}"] = row.get(f"rows_{stage}", 0) + cell["rows"]
            if cell["label"] == positive_class:
                row[f"positive_{stage}"] = row.get(f"positive_{stage}", 0) + cell["rows"]
    for row in table.values():
        for stage in ("before", "after"):
            rows = row.get(f"rows_{stage}", 0)
            row[f"rows_{stage}"] = rows
            row[f"positive_rate_{stage}"] = row.get(f"positive_{stage}", 0) / rows if rows else None
    return list(table.values())


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _short(value: object, digits: int = 4) -> str:
    """A number with at most ``digits`` decimals and no trailing zeros (thresholds: 0.8, not
    0.8000); anything else as ``_fmt`` writes it."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return _fmt(value)


def _interval(interval: dict | None, digits: int = 3) -> str:
    """``value (lower–upper)`` from ``{"value", "lower", "upper"}``; bounds omitted when absent."""
    if not interval:
        return "n/a"
    text = _fmt(interval.get("value"), digits)
    if interval.get("lower") is not None and interval.get("upper") is not None:
        text += f" ({_fmt(interval['lower'], digits)}–{_fmt(interval['upper'], digits)})"
    return text


def _setting(value: object) -> str:
    """A recorded configuration value as text: lists joined, mappings as key=value, no Python
    reprs (``None``/``True``) in the card."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_setting(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}={_setting(v)}" for k, v in value.items()) if value else "none"
    return str(value)


# The nine per-group metrics evaluate reports with bootstrap intervals, in card order.
GROUP_METRICS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("accuracy", "accuracy"),
    ("f1", "F1"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("log_loss", "log loss"),
    ("brier", "Brier"),
    ("ece", "ECE"),
)


def group_metric_table(audit: dict) -> dict:
    """Per group of one audited feature: count, the small-group flag and each recorded metric
    of the nine as ``value (lower–upper)``. The value comes from the interval record
    (``intervals.<group>.<metric>``, evaluate's bootstrap) and falls back to the point value in
    ``groups``; a metric no group has a value for gets no column (an intersection records only
    ROC-AUC and accuracy). Returns ``{"columns": [(key, name)], "rows": [...]}``."""
    intervals = audit.get("intervals") or {}
    excluded = set(audit.get("excluded_groups", []))
    records: dict[str, dict[str, dict | None]] = {}
    for group, row in audit["groups"].items():
        records[group] = {}
        for key, _ in GROUP_METRICS:
            record = (intervals.get(group) or {}).get(key)
            if record is None and row.get(key) is not None:
                record = {"value": row[key]}
            elif record is not None and "value" not in record:
                record = {**record, "value": row.get(key)}
            records[group][key] = record
    columns = [
        (key, name)
        for key, name in GROUP_METRICS
        if any(r[key] is not None and r[key].get("value") is not None for r in records.values())
    ]
    rows = [
        {
            "group": group,
            "count": row["count"],
            "small": group in excluded,
            "cells": [_interval(records[group][key]) for key, _ in columns],
        }
        for group, row in audit["groups"].items()
    ]
    return {"columns": columns, "rows": rows}


def training_settings(hyperparameters: dict) -> list[tuple[str, str]]:
    """Every recorded training hyperparameter as (key, text), in the order train.json lists them."""
    return [(key, _setting(value)) for key, value in hyperparameters.items()]


def input_kinds(data: dict) -> list[dict]:
    """The model's raw input columns by kind, as prepare recorded them (``prepare.recorded``),
    each with how preprocessing encodes that kind; kinds with no column are left out. Records
    written before boolean and datetime columns existed have neither key: none of either."""
    numeric = data["numeric_features"]
    logged = [c for c in data.get("log_transform") or [] if c in numeric]
    kinds = (
        (
            "numeric",
            numeric,
            "median-imputed and standardised" + (f", log1p first for {', '.join(logged)}" if logged else ""),
        ),
        ("boolean", data.get("boolean_features") or [], "0/1, then median-imputed and standardised"),
        (
            "datetime",
            data.get("datetime_features") or [],
            "each expanded into its declared date parts, median-imputed and standardised",
        ),
        (
            "categorical",
            data["categorical_features"],
            "one-hot over the training categories, with one slot shared by rare"
            + (
                f" (fewer than {data['min_category_count']} training rows)"
                if data.get("min_category_count") is not None
                else ""
            )
            + " or unseen categories and one for missing values",
        ),
    )
    return [
        {"kind": kind, "columns": list(columns), "encoding": encoding}
        for kind, columns, encoding in kinds
        if columns
    ]


# The steps augment_training can run (augment.json "steps"), by kind of change.
RESAMPLING_STEPS = ("group_balance", "rebalance_random", "rebalance_smote")
NOISE_STEP = "gaussian_noise"


def _positive_rate(counts: dict, positive_class: str) -> float | None:
    total = sum(counts.values())
    return counts.get(positive_class, 0) / total if total else None


def augmentation_summary(augment: dict, data: dict) -> dict:
    """What augmentation actually did, from the steps augment recorded: the steps that ran
    (``ran``), each with the setting that drove it (``settings``: the minority/majority ratio
    only for class rebalancing), the resampling steps that added rows (``resampled``), whether
    Gaussian noise was added (``noise``) and the training positive rate before and after.

    A record without ``steps`` (written before they were recorded) is read from ``method``
    ("step+step", "none") and the total rows before and after."""
    if "steps" in augment:
        steps = [dict(step) for step in augment["steps"]]
    else:
        names = [] if augment["method"] == "none" else augment["method"].split("+")
        steps = [
            {"step": name, "rows_before": augment["rows_before"], "rows_after": augment["rows_after"]}
            for name in names
        ]
    settings = augment.get("settings") or {}
    descriptions = []
    for step in steps:
        name = step["step"]
        if name.startswith("rebalance_"):
            text = f"minority/majority ratio {_short(float(augment['minority_ratio']))}"
            if name == "rebalance_smote" and settings.get("smote_neighbors") is not None:
                text += f", {settings['smote_neighbors']} neighbours"
        elif name == "group_balance" and settings.get("group_balance"):
            feature = settings.get("group_feature") or data["sensitive_features"][0]
            text = f"`{settings['group_balance']}` over `{feature}`"
        elif name == NOISE_STEP and settings.get("noise_std") is not None:
            noise = _short(float(settings["noise_std"]))
            text = f"noise {noise} × each non-sensitive numeric column's standard deviation"
        else:
            text = ""
        descriptions.append(f"{name}: {text}" if text else name)
    positive = data["positive_class"]
    return {
        "ran": [step["step"] for step in steps],
        "settings": descriptions,
        "resampled": [
            step["step"]
            for step in steps
            if step["step"] in RESAMPLING_STEPS and step["rows_after"] > step["rows_before"]
        ],
        "noise": any(step["step"] == NOISE_STEP for step in steps),
        "noise_std": settings.get("noise_std"),
        "positive_rate_before": _positive_rate(augment["label_counts_before"], positive),
        "positive_rate_after": _positive_rate(augment["label_counts_after"], positive),
    }


def augment_cells(augment: dict) -> list[dict]:
    """``rows_by_group_and_label`` ("feature=group|label=label" → before/after) as table rows."""
    rows = []
    for key, counts in (augment.get("rows_by_group_and_label") or {}).items():
        cell, _, label = key.rpartition("|label=")
        feature, _, group = cell.partition("=")
        rows.append(
            {
                "feature": feature,
                "group": group,
                "label": label,
                "before": counts.get("before", 0),
                "after": counts.get("after", 0),
            }
        )
    return rows


def attribution_rows(attributions: dict) -> list[dict]:
    """The importance table with, where recorded, each column's share interval and rank
    interval from the stability bootstrap."""
    columns = (attributions.get("stability") or {}).get("columns", {})
    rows = []
    for rank, row in enumerate(attributions["importance"], start=1):
        stable = columns.get(row["column"])
        rows.append(
            {
                **row,
                "rank": rank,
                "share_interval": (
                    f"{_pct(stable['share_lower'])}–{_pct(stable['share_upper'])}" if stable else "n/a"
                ),
                "rank_interval": (f"{stable['rank_lower']}–{stable['rank_upper']}" if stable else "n/a"),
            }
        )
    return rows


def top_columns_by_group(attributions: dict, top: int = 3) -> list[dict]:
    """Per sensitive feature and group: rows explained, small flag and the ``top`` columns by
    mean |attribution| with their shares."""
    rows = []
    for feature, groups in (attributions.get("by_group") or {}).items():
        for group, record in groups.items():
            ordered = sorted(record["columns"].items(), key=lambda item: item[1]["rank"])[:top]
            rows.append(
                {
                    "feature": feature,
                    "group": group,
                    "rows": record["rows"],
                    "small": record.get("small", False),
                    "top": ", ".join(f"{c} ({_pct(v['share'])})" for c, v in ordered),
                }
            )
    return rows


def mitigation_rows(mitigation: dict) -> tuple[list[dict], list[dict]]:
    """(overall, per-feature) before/after rows of an enabled mitigation report."""
    before, after = mitigation["before"], mitigation["after"]
    overall = [
        {"metric": name, "before": before[key], "after": after[key]}
        for key, name in (("accuracy", "accuracy"), ("selection_rate", "selection rate"))
    ]
    features = []
    for feature, audit in before["fairness"].items():
        mitigated = after["fairness"].get(feature, {})
        for key, name in (
            ("demographic_parity_difference", "demographic parity difference"),
            ("equalized_odds_difference", "equalized odds difference"),
        ):
            features.append(
                {"feature": feature, "metric": name, "before": audit.get(key), "after": mitigated.get(key)}
            )
    return overall, features


def mitigation_group_column(mitigation: dict) -> str | None:
    """The audit key (column) of the groups the mitigated rule is fitted on, or None when the
    audit has none. The rule names the raw feature; a binned numeric one (``age``) is audited,
    and mitigated, per bin under its group column (``age_group``), so looking the raw name up
    in the audit found nothing and the per-group before/after table silently disappeared."""
    feature = mitigation["rule"]["sensitive_feature"]
    audited = mitigation["before"]["fairness"]
    for column in (feature, DatasetConfig.group_column(feature)):
        if column in audited and column in mitigation["after"]["fairness"]:
            return column
    return None


def disparity_findings(fairness: dict) -> list[str]:
    """Plain-language statements of the largest per-group gaps, for the ethics section."""
    findings = []
    for feature, audit in fairness.items():
        groups = {g: row for g, row in audit["groups"].items() if row.get("selection_rate") is not None}
        if len(groups) < 2:
            continue
        low = min(groups, key=lambda g: groups[g]["selection_rate"])
        high = max(groups, key=lambda g: groups[g]["selection_rate"])
        findings.append(
            f"By {feature}, the model predicts the positive class for {_pct(groups[high]['selection_rate'])} "
            f"of '{high}' (n={groups[high]['count']}) but {_pct(groups[low]['selection_rate'])} of "
            f"'{low}' (n={groups[low]['count']}); demographic parity difference "
            f"{_fmt(audit['all_groups']['demographic_parity_difference'])}, equalized odds difference "
            f"{_fmt(audit['all_groups']['equalized_odds_difference'])} (all groups)."
        )
    return findings


def small_groups(fairness: dict) -> list[str]:
    return [
        f"{feature}='{group}' (n={audit['groups'][group]['count']})"
        for feature, audit in fairness.items()
        for group in audit["excluded_groups"]
    ]


# The threshold rule that takes ``evaluate.threshold`` as it is (config.EvaluateConfig); the
# others (max_f1, target_precision, target_recall) tune the threshold on the validation split.
FIXED_THRESHOLD_RULE = "fixed"


def threshold_source(evaluation: dict) -> str:
    """Where the decision threshold came from: fixed in params, or chosen on the validation
    split by a rule (with its target). The card said "chosen on the validation split by the
    rule `fixed`" while its caveats said the threshold was not tuned on validation."""
    choice = evaluation["threshold_choice"]
    if choice["rule"] == FIXED_THRESHOLD_RULE:
        return "fixed in params (`evaluate.threshold_rule: fixed`), not tuned on the validation split"
    target = f" (target {choice['target']})" if choice.get("target") is not None else ""
    return f"chosen on the validation split by the rule `{choice['rule']}`{target}"


def figure_markdown(figure: Figure, src: str) -> str:
    title = figure.title.replace("[", "(").replace("]", ")")
    return f"![{title}]({src})\n\n*{figure.title}.* {figure.caption}"


def epochs_text(hyperparameters: dict) -> str:
    """The epoch budget and early stopping. Lightning's EarlyStopping stops once val_loss has
    not improved for ``patience`` epochs, and the first epoch always improves (on +inf): the
    earliest stop is after epoch patience + 1. With patience >= max_epochs - 1 it cannot end
    training before the last epoch, so "up to N epochs with early stopping" would mislead
    (the shipped params set patience = max_epochs on purpose: one-cycle must anneal to its end)."""
    epochs, patience = hyperparameters["max_epochs"], hyperparameters["early_stopping_patience"]
    if patience >= epochs - 1:
        # EarlyStopping still stops at once on a non-finite val_loss (check_finite).
        return (
            f"{epochs} epochs (early stopping by patience off: with patience {patience} it cannot "
            f"stop training before epoch {epochs}; only a non-finite validation loss would)"
        )
    return f"up to {epochs} epochs with early stopping (patience {patience})"


def _utc(stamp: object) -> str:
    """A ledger time ("2026-01-05T10:00:00Z") as the card writes times; as written otherwise."""
    try:
        return datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return _fmt(stamp)


def appended_batches(validation: dict) -> dict | None:
    """The labelled batches retraining appended to the data file before validate read it (the
    ledger validate recorded as ``appended_batches``); None when there were none, or for a
    report written before validate recorded them."""
    entries = validation.get("appended_batches") or []
    if not entries:
        return None
    rows = [
        {
            "file": entry.get("file", "unnamed batch"),
            "rows": entry.get("rows"),
            "appended_at": _utc(entry.get("appended_at")),
            "sha256": entry["sha256"],
        }
        for entry in entries
    ]
    total = sum(row["rows"] for row in rows if isinstance(row["rows"], int))
    return {"rows": rows, "total": total, "original": validation["rows"] - total}


def champion_comparison_tables(
    comparison: dict | None, registered: dict, gates: dict, evaluation: dict
) -> dict | None:
    """This version beside the champion register judged it against, in two tables.

    ``on_split``: the metrics evaluate measured by rescoring that champion on this test split
    (``champion_overall`` in gates.json, what register's promotion decision compares), beside
    this version's from evaluation.json. ``own_split``: the other metrics, as each run logged
    them; the champion's come from its own run's test split, which after a retraining on
    appended data is another split (a promotion by +0.0003 on this split read as a 0.02 drop
    when its old-split ROC-AUC stood beside the new one). ``same_data``: whether both versions'
    ``data_sha256`` lineage tags agree (None when either is missing). None when there was no
    other champion."""
    comparison = comparison or {}
    version = comparison.get("previous_version")
    judged = registered.get("previous_champion")
    if version is None and judged is not None and str(judged) != str(registered["version"]):
        version = judged  # the registry gave no run metrics; evaluate's rescoring may be there
    if version is None:
        return None
    version = str(version)
    # Read as register reads it for its decision.
    scored, overall, unscored = rescored_champion(gates.get("champion_non_regression"))
    if overall is not None and str(scored) != version:
        overall, unscored = None, f"evaluate rescored champion v{scored}, not v{version}"
    on_split = []
    for metric, theirs in (overall or {}).items():
        ours = evaluation.get(metric)
        on_split.append(
            {
                "metric": f"test_{metric}",
                "this": ours,
                "previous": theirs,
                "difference": None if ours is None or theirs is None else ours - theirs,
            }
        )
    rescored = {row["metric"] for row in on_split}
    own_split = [row for row in comparison.get("rows") or [] if row["metric"] not in rescored]
    if not on_split and not own_split:
        return None
    ours, theirs = comparison.get("data_sha256"), comparison.get("previous_data_sha256")
    return {
        "version": version,
        "run_id": comparison.get("previous_run_id"),
        "on_split": on_split,
        "own_split": own_split,
        "unscored": None if overall else unscored,
        "same_data": None if ours is None or theirs is None else ours == theirs,
        "data_sha256": ours,
        "previous_data_sha256": theirs,
    }


def render_model_card(
    params: Params,
    recorded: dict,
    generated_at: datetime | None = None,
    figures: list[Figure] | None = None,
    figure_src: Callable[[Figure], str] | None = None,
    registry: dict | None = None,
) -> str:
    """``recorded`` holds the parsed JSON outputs: validation, prepare, augment, train,
    evaluation, fairness, attributions, gates, mitigation, registered, run (the run reference).
    ``figures`` are placed in their sections, each shown with ``figure_src(figure)`` as its
    image source (a relative path for Markdown, a data URI for HTML). ``registry`` optionally
    holds what the MLflow registry recorded: ``lineage`` (the version's tags and creation time)
    and ``comparison`` (this run's metrics beside the previous champion's).

    Only ``params.report`` (intended use, wording) comes from the current params: everything
    that describes the model comes from what its stages recorded.
    """
    by_section: dict[str, list[str]] = {name: [] for name in FIGURE_SECTIONS}
    for figure in figures or []:
        src = figure_src(figure) if figure_src else figure.file
        by_section[figure.section].append(figure_markdown(figure, src))
    # Every input as a ``Recorded`` mapping: a key the card needs but the input lacks raises
    # MissingRecordedKey naming the input and the key (in the helpers below and the template).
    recorded = {name: as_recorded(name, value) for name, value in recorded.items()}
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=CardUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    env.filters["interval"] = _interval
    env.filters["short"] = _short
    env.filters["setting"] = _setting
    template = env.get_template("model_card.md.j2")
    return template.render(
        params=params,
        generated_at=(generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        findings=disparity_findings(recorded["fairness"]),
        small_groups=small_groups(recorded["fairness"]),
        gate_thresholds={check["name"]: check["threshold"] for check in recorded["gates"]["checks"]},
        figures=by_section,
        balance=label_balance(recorded["augment"], recorded["prepare"]["recorded"]["positive_class"]),
        group_tables={feature: group_metric_table(audit) for feature, audit in recorded["fairness"].items()},
        settings=training_settings(recorded["train"]["hyperparameters"]),
        augment_cells=augment_cells(recorded["augment"]),
        inputs=input_kinds(recorded["prepare"]["recorded"]),
        augmentation=augmentation_summary(recorded["augment"], recorded["prepare"]["recorded"]),
        attribution_rows=attribution_rows(recorded["attributions"]),
        attribution_groups=top_columns_by_group(recorded["attributions"]),
        mitigation_tables=(
            mitigation_rows(recorded["mitigation"]) if recorded["mitigation"].get("enabled") else ([], [])
        ),
        mitigation_groups=(
            mitigation_group_column(recorded["mitigation"]) if recorded["mitigation"].get("enabled") else None
        ),
        lineage=(registry or {}).get("lineage"),
        comparison=(registry or {}).get("comparison"),
        champion_tables=champion_comparison_tables(
            (registry or {}).get("comparison"),
            recorded["registered"],
            recorded["gates"],
            recorded["evaluation"],
        ),
        threshold_source=threshold_source(recorded["evaluation"]),
        epochs=epochs_text(recorded["train"]["hyperparameters"]),
        appended=appended_batches(recorded["validation"]),
        **recorded,
    )


HTML_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.3em}h2{margin-top:0}
section{border-top:1px solid #ddd;padding:1em 0}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.85em;display:block;max-width:100%;
overflow-x:auto}
td,th{border:1px solid #ccc;padding:.25em .45em;text-align:left;vertical-align:top}
th{background:#f3f3f3}img{max-width:100%;height:auto;display:block;margin:.8em 0 .2em}
code{background:#f5f5f5;padding:0 .2em}nav ol{columns:2}
"""


def render_model_card_html(markdown: str, title: str) -> str:
    """A self-contained HTML page from the card's Markdown: raw HTML in the Markdown is escaped
    (group names come from data), every ``##`` section becomes a ``<section>`` with an id, and a
    content-security policy forbids loading anything beyond the embedded data."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    # Keep an interval such as "0.938–0.964" on one line in narrow table cells (word joiner).
    body = re.sub(r"(\d%?)–(\d)", "\\1–&#8288;\\2", body)
    parts = re.split(r"(?=<h2>)", body)
    head, sections, toc = parts[0], [], []
    for part in parts[1:]:
        heading = re.match(r"<h2>(.*?)</h2>", part).group(1)
        anchor = re.sub(r"[^a-z0-9]+", "-", re.sub(r"<[^>]+>", "", heading).lower()).strip("-")
        toc.append(f'<li><a href="#{anchor}">{heading}</a></li>')
        sections.append(f'<section id="{anchor}">\n{part}</section>\n')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n"
        f"{head}<nav><ol>{''.join(toc)}</ol></nav>\n{''.join(sections)}</body>\n</html>\n"
    )


def render_model_card_files(
    params: Params,
    recorded: dict,
    markdown_path: Path,
    figures_dir: Path | None = None,
    registry: dict | None = None,
    generated_at: datetime | None = None,
) -> tuple[str, str]:
    """(Markdown, HTML) of the card: the Markdown links figures relative to ``markdown_path``,
    the HTML embeds them."""
    figures = load_figures(figures_dir)
    generated_at = generated_at or datetime.now(UTC)
    markdown = render_model_card(
        params,
        recorded,
        generated_at,
        figures,
        lambda f: Path(os.path.relpath(f.path.resolve(), Path(markdown_path).resolve().parent)).as_posix(),
        registry,
    )
    embedded = render_model_card(params, recorded, generated_at, figures, Figure.data_uri, registry)
    return markdown, render_model_card_html(embedded, f"Model card: {params.report.model_name}")
