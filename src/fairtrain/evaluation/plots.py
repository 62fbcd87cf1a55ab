"""Plot data for ``dvc plots`` and PNG figures for the model card and the MLflow run.

DVC data (long format, one record per point; templates in ``.dvc/plots``):

- ``roc_groups``: ``{"feature", "curve", "order", "fpr", "tpr"}``: the overall curve and one
  per group of each sensitive feature (faceted by feature, coloured by curve);
- ``pr_groups``: the same for precision-recall (``recall``, ``precision``);
- ``group_metrics``: ``{"metric", "group", "value", "lower", "upper"}``: per-group metrics
  with their bootstrap intervals (bars with error bars);
- ``attribution_bars``: ``{"metric", "group" (= column), "value", "lower", "upper"}``:
  importance shares of Integrated Gradients (with bootstrap intervals) and of the second method.

Figures (matplotlib, Agg backend): a directory with PNG files and ``index.json``, a list of
``{"file", "title", "section", "caption"}`` with section one of ``metrics``,
``quantitative_analyses``, ``model_examination`` (the model card's sections).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from fairtrain.evaluation.calibration import calibration_curve_points

GROUP_BAR_METRICS = ("roc_auc", "accuracy", "recall", "ece")
MAX_CURVE_POINTS = 200  # per curve in the DVC data: enough for the shape, small JSON


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_CURVE_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, MAX_CURVE_POINTS).round().astype(int))
    return x[keep], y[keep]


def _curve(kind: str, y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if len(np.unique(y)) < 2:
        return None  # a single-class group has no ROC or PR curve
    if kind == "roc":
        fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=True)
        return fpr, tpr
    precision, recall, _ = skm.precision_recall_curve(y, p)
    return recall, precision


def curves(
    kind: str, y_true: np.ndarray, proba: np.ndarray, frame: pd.DataFrame, features: list[str]
) -> list[dict]:
    """``kind`` "roc" or "pr": overall and per-group curves in DVC's long format."""
    x_name, y_name = ("fpr", "tpr") if kind == "roc" else ("recall", "precision")
    records = []
    overall = _curve(kind, y_true, proba)
    for feature in features:
        labels = frame[feature].astype(str).to_numpy()
        parts = [("overall", overall)] + [
            (f"{feature}={g}", _curve(kind, y_true[labels == g], proba[labels == g]))
            for g in sorted(np.unique(labels).tolist())
        ]
        for name, points in parts:
            if points is None:
                continue
            xs, ys = _thin(*points)
            records.extend(
                {"feature": feature, "curve": name, "order": i, x_name: float(a), y_name: float(b)}
                for i, (a, b) in enumerate(zip(xs, ys, strict=True))
            )
    return records


def group_metric_bars(fairness: dict, evaluation: dict, features: list[str]) -> list[dict]:
    """Per-group metric values and bootstrap intervals (needs ``fairness[f]["intervals"]``)."""
    records = []
    for metric in GROUP_BAR_METRICS:
        interval = evaluation.get("intervals", {}).get(metric, {})
        records.append(
            {
                "metric": metric,
                "group": "overall",
                "value": evaluation.get(metric),
                "lower": interval.get("lower"),
                "upper": interval.get("upper"),
            }
        )
        for feature in features:
            for group, intervals in fairness[feature].get("intervals", {}).items():
                entry = intervals.get(metric, {})
                records.append(
                    {
                        "metric": metric,
                        "group": f"{feature}={group}",
                        "value": entry.get("value"),
                        "lower": entry.get("lower"),
                        "upper": entry.get("upper"),
                    }
                )
    return records


def attribution_bars(attributions: dict) -> list[dict]:
    stability = attributions.get("stability", {}).get("columns", {})
    records = [
        {
            "metric": "integrated_gradients share",
            "group": row["column"],
            "value": row["share"],
            "lower": stability.get(row["column"], {}).get("share_lower", row["share"]),
            "upper": stability.get(row["column"], {}).get("share_upper", row["share"]),
        }
        for row in attributions["importance"]
    ]
    cross = attributions.get("cross_check")
    if cross:
        records.extend(
            {
                "metric": f"{cross['method']} share",
                "group": row["column"],
                "value": row["share"],
                "lower": row["share"],
                "upper": row["share"],
            }
            for row in cross["importance"]
        )
    return records


# --- PNG figures ---------------------------------------------------------------------------------


def _save(fig, directory: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(directory / name, dpi=100)
    plt.close(fig)
    return name


def _curve_figure(kind, y_true, proba, frame, features, directory) -> str:
    fig, axes = plt.subplots(1, len(features), figsize=(5 * len(features), 4.5), squeeze=False)
    overall = _curve(kind, y_true, proba)
    for ax, feature in zip(axes[0], features, strict=True):
        labels = frame[feature].astype(str).to_numpy()
        ax.plot(*overall, color="black", linewidth=2, label="overall")
        for group in sorted(np.unique(labels).tolist()):
            points = _curve(kind, y_true[labels == group], proba[labels == group])
            if points is not None:
                ax.plot(*points, linewidth=1, label=f"{group} (n={int((labels == group).sum())})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate")
        else:
            ax.set(xlabel="recall", ylabel="precision")
        ax.set_title(f"{'ROC' if kind == 'roc' else 'Precision-recall'} by {feature}")
        ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
    return _save(fig, directory, f"{kind}.png")


def _calibration_figure(y_true, proba, directory) -> str:
    points = calibration_curve_points(y_true, proba)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    ax.plot(
        [p["mean_predicted"] for p in points], [p["observed_rate"] for p in points], marker="o", label="model"
    )
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title="Calibration (test)")
    ax.legend(fontsize=8)
    return _save(fig, directory, "calibration.png")


def _confusion_figure(y_true, y_pred, labels, directory) -> str:
    matrix = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="black")
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (test)")
    return _save(fig, directory, "confusion.png")


def _bars_figure(records: list[dict], title: str, directory: Path, name: str) -> str:
    metrics = list(dict.fromkeys(r["metric"] for r in records))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.2 * len(metrics), 0.3 * len(records) / len(metrics) + 2)
    )
    axes = np.atleast_1d(axes)
    for ax, metric in zip(axes, metrics, strict=True):
        rows = [r for r in records if r["metric"] == metric and r["value"] is not None]
        values = np.array([r["value"] for r in rows])
        lower = np.array([r["value"] if r["lower"] is None else r["lower"] for r in rows])
        upper = np.array([r["value"] if r["upper"] is None else r["upper"] for r in rows])
        positions = np.arange(len(rows))[::-1]
        ax.barh(
            positions,
            values,
            xerr=[np.clip(values - lower, 0, None), np.clip(upper - values, 0, None)],
            capsize=2,
            color="tab:blue",
            alpha=0.8,
        )
        ax.set_yticks(positions, [r["group"] for r in rows], fontsize=7)
        ax.set_title(metric, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, directory, name)


def threshold_text(choice: dict) -> str:
    """The decision threshold and where it came from (``choose_threshold``'s record): the
    ``fixed`` rule takes it from params; the others tune it on the validation split."""
    threshold = f"the decision threshold {choice['threshold']:.3f}"
    if choice["rule"] == "fixed":
        return f"{threshold}, fixed in params (`evaluate.threshold_rule: fixed`)"
    target = f" (target {choice['target']})" if choice.get("target") is not None else ""
    return f"{threshold}, chosen on the validation split by the rule `{choice['rule']}`{target}"


def write_figures(
    directory: Path,
    y_true: np.ndarray,
    proba: np.ndarray,
    y_pred: np.ndarray,
    frame: pd.DataFrame,
    features: list[str],
    class_names: list[str],
    group_bars: list[dict],
    attribution_records: list[dict],
    level: float,
    threshold_choice: dict,
) -> list[dict]:
    """Write the PNGs and ``index.json`` into ``directory`` (which must exist); returns the index.
    ``threshold_choice`` (``choose_threshold``'s record) is named in the confusion matrix's caption."""
    index = [
        {
            "file": _curve_figure("roc", y_true, proba, frame, features, directory),
            "title": "ROC curves, overall and per group",
            "section": "metrics",
            "caption": "Test split; one curve per group of each sensitive feature, the overall one in black.",
        },
        {
            "file": _curve_figure("pr", y_true, proba, frame, features, directory),
            "title": "Precision-recall curves, overall and per group",
            "section": "metrics",
            "caption": "Test split; one curve per group of each sensitive feature, the overall one in black.",
        },
        {
            "file": _calibration_figure(y_true, proba, directory),
            "title": "Calibration curve",
            "section": "metrics",
            "caption": "Observed positive rate against mean predicted probability in 10 equal-width bins.",
        },
        {
            "file": _confusion_figure(y_true, y_pred, class_names, directory),
            "title": "Confusion matrix",
            "section": "metrics",
            "caption": f"Test split at {threshold_text(threshold_choice)}.",
        },
        {
            "file": _bars_figure(group_bars, "Metrics per group", directory, "group_metrics.png"),
            "title": "Metrics per group with confidence intervals",
            "section": "quantitative_analyses",
            "caption": (
                f"Bars: value on the test split; error bars: {level:.0%} percentile bootstrap interval."
            ),
        },
        {
            "file": _bars_figure(attribution_records, "Feature importance", directory, "attributions.png"),
            "title": "Feature importance per original column",
            "section": "model_examination",
            "caption": (
                "Share of mean |attribution| per column; Integrated Gradients with bootstrap intervals "
                "over the explained rows, next to the second method's shares."
            ),
        },
    ]
    (directory / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index
