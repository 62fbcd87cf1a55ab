"""fairtrain.evaluation.plots: DVC plot records and the PNG figures with their index."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from fairtrain.evaluation import plots


def _data(rows=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.3).astype(np.int64)
    proba = np.clip(0.3 * y + rng.random(rows) * 0.7, 0, 1)
    frame = pd.DataFrame(
        {
            "sex": np.where(rng.random(rows) < 0.5, "F", "M"),
            "race": np.where(rng.random(rows) < 0.9, "W", "B"),
        }
    )
    frame.loc[:3, "race"] = "Tiny"  # a group with 4 negative rows only: no curve, no crash
    y[:4] = 0
    return y, proba, frame


def test_curves_hold_overall_and_every_group_with_two_classes():
    y, proba, frame = _data()
    records = plots.curves("roc", y, proba, frame, ["sex", "race"])
    curves = {(r["feature"], r["curve"]) for r in records}
    assert curves == {
        ("sex", "overall"),
        ("sex", "sex=F"),
        ("sex", "sex=M"),
        ("race", "overall"),
        ("race", "race=W"),
        ("race", "race=B"),
    }
    female = [r for r in records if r["curve"] == "sex=F"]
    rows = frame["sex"] == "F"
    fpr, tpr, _ = skm.roc_curve(y[rows], proba[rows], drop_intermediate=True)
    assert [r["order"] for r in female] == list(range(len(female)))
    assert female[0]["fpr"] == fpr[0] and female[-1]["tpr"] == tpr[-1] == 1.0
    assert len(female) <= plots.MAX_CURVE_POINTS
    pr = plots.curves("pr", y, proba, frame, ["sex"])
    assert {"recall", "precision"} <= set(pr[0])


def test_group_bars_and_attribution_bars_carry_intervals():
    evaluation = {"roc_auc": 0.9, "intervals": {"roc_auc": {"value": 0.9, "lower": 0.88, "upper": 0.92}}}
    fairness = {"sex": {"intervals": {"F": {"roc_auc": {"value": 0.91, "lower": 0.85, "upper": 0.95}}}}}
    bars = plots.group_metric_bars(fairness, evaluation, ["sex"])
    roc = [b for b in bars if b["metric"] == "roc_auc"]
    assert roc == [
        {"metric": "roc_auc", "group": "overall", "value": 0.9, "lower": 0.88, "upper": 0.92},
        {"metric": "roc_auc", "group": "sex=F", "value": 0.91, "lower": 0.85, "upper": 0.95},
    ]
    attributions = {
        "importance": [{"column": "age", "share": 0.6}, {"column": "hours", "share": 0.4}],
        "stability": {"columns": {"age": {"share_lower": 0.5, "share_upper": 0.7}}},
        "cross_check": {"method": "feature_ablation", "importance": [{"column": "age", "share": 0.7}]},
    }
    records = plots.attribution_bars(attributions)
    assert records[0] == {
        "metric": "integrated_gradients share",
        "group": "age",
        "value": 0.6,
        "lower": 0.5,
        "upper": 0.7,
    }
    assert records[1]["lower"] == records[1]["upper"] == 0.4  # no interval: a point
    assert records[2]["metric"] == "feature_ablation share"


def test_figures_are_pngs_listed_in_the_index(tmp_path):
    y, proba, frame = _data()
    bars = [
        {"metric": "roc_auc", "group": "overall", "value": 0.9, "lower": 0.88, "upper": 0.92},
        {"metric": "ece", "group": "sex=F", "value": 0.05, "lower": None, "upper": None},
    ]
    attribution = [{"metric": "ig", "group": "age", "value": 0.6, "lower": 0.5, "upper": 0.7}]
    index = plots.write_figures(
        tmp_path,
        y,
        proba,
        (proba >= 0.5).astype(int),
        frame,
        ["sex", "race"],
        ["no", "yes"],
        bars,
        attribution,
        0.95,
        {"rule": "max_f1", "target": None, "threshold": 0.4321},
    )
    assert json.loads((tmp_path / "index.json").read_text()) == index
    assert {entry["file"] for entry in index} == {
        "roc.png",
        "pr.png",
        "calibration.png",
        "confusion.png",
        "group_metrics.png",
        "attributions.png",
    }
    for entry in index:
        assert set(entry) == {"file", "title", "section", "caption"}
        assert entry["section"] in {"metrics", "quantitative_analyses", "model_examination"}
        assert (tmp_path / entry["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([e["file"] for e in index] + ["index.json"])
    (confusion,) = [entry for entry in index if entry["file"] == "confusion.png"]
    assert confusion["caption"] == (
        "Test split at the decision threshold 0.432, chosen on the validation split by the rule `max_f1`."
    )


@pytest.mark.parametrize(
    ("choice", "text"),
    [
        (
            {"rule": "fixed", "target": 0.5, "threshold": 0.5},
            "the decision threshold 0.500, fixed in params (`evaluate.threshold_rule: fixed`)",
        ),
        (
            {"rule": "target_recall", "target": 0.8, "threshold": 0.31234},
            "the decision threshold 0.312, chosen on the validation split by the rule "
            "`target_recall` (target 0.8)",
        ),
    ],
)
def test_the_confusion_caption_says_where_the_threshold_came_from(choice, text):
    """Its caption said "chosen on validation" for every rule, the fixed one too."""
    assert plots.threshold_text(choice) == text
