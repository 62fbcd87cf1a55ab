"""fairtrain.reporting.model_card.render_model_card from a small, complete ``recorded`` dict."""

from __future__ import annotations

import base64
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

import fairtrain.reporting.model_card as model_card
from fairtrain.errors import FairtrainError
from fairtrain.reporting.model_card import (
    disparity_findings,
    load_figures,
    render_model_card,
    render_model_card_files,
    small_groups,
)
from fairtrain.stages.report_stage import RECORDED
from tests.browser import inspect_page

TEMPLATE = Path(model_card.__file__).parent / "templates" / "model_card.md.j2"


def _group(count, selection, tpr, fpr, accuracy):
    return {
        "count": count,
        "selection_rate": selection,
        "true_positive_rate": tpr,
        "false_positive_rate": fpr,
        "accuracy": accuracy,
    }


@pytest.fixture
def recorded() -> dict:
    """The parsed JSON outputs of every stage (shapes as in metrics/*.json and models/*.json)."""
    return {
        "validation": {
            "source": "data/raw/tiny.csv",
            "status": "passed",
            "rows": 1234,
            "columns": ["age", "workclass"],
            "error_count": 0,
            "warning_count": 1,
            "errors": [],
            "warnings": [
                {
                    "column": "workclass",
                    "check": "missing_share",
                    "message": "77 missing value(s) (6.2% of rows); they are imputed in prepare",
                    "count": 77,
                    "examples": [],
                    "lines": [],
                    "expected": "",
                }
            ],
        },
        "prepare": {
            "rows": {"train": 863, "val": 124, "test": 247},
            "positive_rate": {"train": 0.2411, "val": 0.2419, "test": 0.2429},
            "n_features": 23,
            "recorded": {
                "dataset_path": "data/raw/tiny.csv",
                "label": "income-per-year",
                "positive_class": ">50K",
                "sensitive_features": ["sex", "race"],
                "numeric_features": ["age", "hours-per-week"],
                "categorical_features": ["workclass", "sex", "race"],
                "dropped": ["fnlwgt"],
                "seed": 7,
                "test_size": 0.2,
                "val_size": 0.1,
                "log_transform": [],
                "min_category_count": 5,
            },
        },
        "augment": {
            "method": "random_oversample",
            "minority_ratio": 0.5,
            "rows_before": 863,
            "rows_after": 982,
            "label_counts_before": {"<=50K": 655, ">50K": 208},
            "label_counts_after": {"<=50K": 655, ">50K": 327},
            "cells_before": [],
            "cells_after": [],
        },
        "train": {
            "epochs_run": 7,
            "best_epoch": 5,
            "best_val_loss": 0.34567891,
            "best_val_auc": 0.90123456,
            "train_rows": 982,
            "num_workers": 2,
            "seconds": 12.5,
            "hyperparameters": {
                "seed": 11,
                "num_workers": 2,
                "use_gpu": False,
                "max_epochs": 9,
                "batch_size": 128,
                "learning_rate": 0.002,
                "weight_decay": 0.0003,
                "dropout": 0.25,
                "hidden_sizes": [32, 16],
                "early_stopping_patience": 2,
            },
        },
        "evaluation": {
            "rows": 247,
            "positive_rate": 0.2429,
            "threshold": 0.5,
            "roc_auc": 0.91279708,
            "accuracy": 0.85229541,
            "f1": 0.69786432,
            "precision": 0.6875,
            "recall": 0.70854592,
            "log_loss": 0.31410701,
            "timings": {"metrics_seconds": 0.1, "attribution_seconds": 0.2},
            "pr_auc": 0.7712,
            "brier": 0.1023,
            "ece": 0.0311,
            "threshold_choice": {
                "rule": "max_f1",
                "target": None,
                "threshold": 0.5,
                "achieved": {"precision": 0.7, "recall": 0.7, "f1": 0.7},
            },
            "intervals": {
                name: {"lower": 0.1111, "upper": 0.9999}
                for name in (
                    "roc_auc",
                    "pr_auc",
                    "accuracy",
                    "f1",
                    "precision",
                    "recall",
                    "log_loss",
                    "brier",
                    "ece",
                )
            },
            "interval_method": "percentile bootstrap, 1000 resamples, level 0.95",
            "baselines": {
                "logistic_regression": {
                    "roc_auc": 0.9026,
                    "accuracy": 0.8503,
                    "log_loss": 0.3262,
                    "fit_seconds": 1.0,
                },
                "hist_gradient_boosting": {
                    "roc_auc": 0.9302,
                    "accuracy": 0.8744,
                    "log_loss": 0.2744,
                    "fit_seconds": 5.0,
                },
            },
        },
        "fairness": {
            "sex": {
                "groups": {
                    "Female": _group(81, 0.1098, 0.6653, 0.0387, 0.9277),
                    "Male": _group(166, 0.3166, 0.7166, 0.1422, 0.8149),
                },
                "min_group_size": 20,
                "excluded_groups": [],
                "demographic_parity_difference": 0.20682362,
                "equalized_odds_difference": 0.10346770,
                "all_groups": {
                    "demographic_parity_difference": 0.20682362,
                    "equalized_odds_difference": 0.10346770,
                },
            },
            "race": {
                "groups": {
                    "White": _group(210, 0.2660, 0.7206, 0.1106, 0.8464),
                    "Black": _group(30, 0.1088, 0.5699, 0.0334, 0.9109),
                    # a single-class group: TPR undefined, written as null
                    "Other": _group(7, 0.0, None, 0.0, 1.0),
                },
                "min_group_size": 20,
                "excluded_groups": ["Other"],
                "demographic_parity_difference": 0.15718866,
                "equalized_odds_difference": 0.15067490,
                "all_groups": {
                    "demographic_parity_difference": 0.26604012,
                    "equalized_odds_difference": 0.72056737,
                },
            },
        },
        "attributions": {
            "method": "integrated_gradients",
            "target": "positive-class probability",
            "baseline": "zeros in standardised space (training means; no category)",
            "rows": 200,
            "n_steps": 50,
            "importance": [
                {"column": "age", "mean_abs_attribution": 0.1229, "share": 0.6, "mean_attribution": 0.0068},
                {"column": "sex", "mean_abs_attribution": 0.0614, "share": 0.3, "mean_attribution": -0.0092},
                {"column": "race", "mean_abs_attribution": 0.0205, "share": 0.1, "mean_attribution": -0.01},
            ],
            "convergence_delta": {"mean_abs": 0.000123, "max_abs": 0.000456, "p95_abs": 0.0003},
        },
        "gates": {
            "passed": True,
            "failed": [],
            "checks": [
                {
                    "name": "roc_auc",
                    "value": 0.91279708,
                    "threshold": 0.8,
                    "passed": True,
                    "reason": "roc_auc = 0.9128 meets the requirement >= 0.8",
                },
                {
                    "name": "sex.demographic_parity_difference",
                    "value": 0.20682362,
                    "threshold": 0.25,
                    "passed": True,
                    "reason": "sex.demographic_parity_difference = 0.2068 meets the requirement <= 0.25",
                },
            ],
            "summary": "all gates passed",
        },
        "registered": {
            "model_name": "fairtrain-tiny",
            "version": 3,
            "model_uri": "models:/fairtrain-tiny/3",
            "aliases": ["challenger"],
            "run_id": "0123456789abcdef0123456789abcdef",
            "promoted": False,
            "promotion_reason": "not promoted: test roc_auc 0.9128 does not beat champion v2 (0.9130)",
            "previous_champion": 2,
            "gates_passed": True,
        },
        "run": {
            "run_id": "0123456789abcdef0123456789abcdef",
            "experiment_id": "1",
            "tracking_uri": "sqlite:///mlflow.db",
        },
    }


@pytest.fixture
def card(params, recorded) -> str:
    return render_model_card(params, recorded, generated_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))


def test_fixture_covers_every_recorded_input(recorded):
    assert set(recorded) == set(RECORDED)


def test_every_section_heading_of_the_template_is_rendered(card, params):
    headings = [line for line in TEMPLATE.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert len(headings) >= 12
    for heading in headings:
        static = heading.split("{{")[0].rstrip()
        assert any(line.startswith(static) for line in card.splitlines()), heading
    assert card.startswith(f"# Model card: {params.report.model_name}\n")
    for feature in params.dataset.sensitive_features:
        assert f"### By `{feature}`" in card


def test_no_template_leftovers_or_python_none(card):
    assert "{{" not in card and "}}" not in card
    assert "{%" not in card and "%}" not in card
    assert "{#" not in card
    assert "None" not in card
    assert "n/a" in card  # the null TPR of the single-class group


def test_numbers_from_the_recorded_outputs(card, recorded):
    assert "| ROC-AUC | 0.9128 |" in card
    assert "| accuracy | 0.8523 |" in card
    assert "| F1 | 0.6979 |" in card
    assert "| log loss | 0.3141 |" in card
    assert "Test split, 247 rows. Decision threshold 0.500, chosen on the validation split" in card
    assert "validation loss 0.3457, validation ROC-AUC 0.9012" in card
    assert "ran 7 epoch(s), best at epoch 5" in card
    assert "expanded to 23 model features" in card
    assert "863 training, 124 validation, 247 test rows" in card
    assert "training rows 863 → 982" in card
    assert "positive rate 24.3%" in card
    assert "1234 rows and 1 warning(s)" in card
    assert "77 missing value(s)" in card
    assert "| Female | 81 | 0.110 | 0.665 | 0.039 | n/a | n/a | 0.928 |" in card  # no FNR/AUC recorded
    assert "| Other | 7 | 0.000 | n/a | 0.000 | n/a | n/a | 1.000 |" in card
    assert "demographic parity difference **0.2068**" in card
    assert "| 1 | age | 0.1229 | 60.0% | 0.0068 |" in card
    assert "mean 0.00012, max 0.00046" in card
    assert "| roc_auc | 0.9128 | 0.8 | pass |" in card


def test_registry_run_and_decision(card, recorded):
    assert (
        "Registered as `fairtrain-tiny` version 3 (aliases: challenger), generated 2026-01-02 03:04 UTC"
        in card
    )
    assert f"MLflow run `{recorded['run']['run_id']}`" in card
    assert "**PASSED** — all gates passed" in card
    assert recorded["registered"]["promotion_reason"] in card


def test_model_details_come_from_what_was_recorded_not_current_params(card, params):
    # train.json's hyperparameters (32 → 16) made the model; params.yaml now says 8 → 4.
    assert params.train.hidden_sizes == [8, 4]
    assert "hidden layers 32 → 16" in card and "8 → 4" not in card
    assert "dropout 0.25" in card and "seed 11" in card
    assert "`data/raw/tiny.csv`" in card


def test_report_params_are_rendered(card, params):
    assert params.report.intended_use in card
    for use in params.report.out_of_scope_uses:
        assert f"- {use}" in card
    assert "Dropped columns: fnlwgt." in card
    assert "5 raw columns (2 numeric, 3 categorical)" in card  # from prepare.json's record


def test_small_groups_and_findings(card, recorded):
    assert "(fewer than 20 test rows, excluded from the gates): Other." in card
    assert "race='Other' (n=7)" in card
    assert small_groups(recorded["fairness"]) == ["race='Other' (n=7)"]
    findings = disparity_findings(recorded["fairness"])
    assert len(findings) == 2
    assert findings[0].startswith("By sex, the model predicts the positive class for 31.7% of 'Male' (n=166)")
    assert "0.0% of 'Other' (n=7)" in findings[1]
    for finding in findings:
        assert finding in card


def test_failed_gates_and_no_augmentation(params, recorded):
    recorded["gates"] = {
        "passed": False,
        "failed": ["roc_auc"],
        "checks": [
            {"name": "roc_auc", "value": None, "threshold": 0.8, "passed": False, "reason": "undefined"}
        ],
        "summary": "failed gates: roc_auc",
    }
    recorded["augment"]["method"] = "none"
    recorded["registered"]["aliases"] = []
    card = render_model_card(params, recorded)
    assert "**FAILED** — failed gates: roc_auc" in card
    assert "| roc_auc | n/a | 0.8 | FAIL |" in card
    assert "Oversampling" not in card
    assert "aliases" not in card
    assert "None" not in card
    assert re.search(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", card)


def test_a_missing_recorded_key_fails_loudly(params, recorded):
    del recorded["train"]["best_epoch"]
    with pytest.raises(Exception, match="best_epoch"):
        render_model_card(params, recorded)


def test_intervals_threshold_rule_and_baselines_are_reported(card):
    assert "| ROC-AUC | 0.9128 | 0.1111 – 0.9999 |" in card
    assert "by the rule `max_f1`" in card
    assert "| hist gradient boosting | 0.9302 | 0.8744 | 0.2744 |" in card
    # The stronger baseline is called out, not buried in the table.
    assert "hist gradient boosting baseline reaches a higher test ROC-AUC (0.9302)" in card
    assert "no intervals were computed" not in card


# --- figures, registry context and the HTML card ----------------------------------------------


def _png(path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(3, 2), dpi=50)
    axes.bar(["Female", "Male"], [0.11, 0.32])
    axes.set_title(title)
    figure.savefig(path, format="png")
    plt.close(figure)


@pytest.fixture
def figures_dir(tmp_path) -> Path:
    """What evaluate writes: PNGs and an index naming each one's section."""
    folder = tmp_path / "plots/figures"
    folder.mkdir(parents=True)
    entries = []
    for name, section in (
        ("roc.png", "metrics"),
        ("selection_rate_sex.png", "quantitative_analyses"),
        ("attributions.png", "model_examination"),
    ):
        _png(folder / name, name)
        entries.append(
            {"file": name, "title": f"Title of {name}", "section": section, "caption": f"About {name}."}
        )
    (folder / "index.json").write_text(json.dumps(entries))
    return folder


@pytest.fixture
def registry() -> dict:
    return {
        "lineage": {
            "created": "2026-01-02 03:04 UTC",
            "tags": {"git_commit": "abc123", "data_sha256": "d" * 64, "version.torch": "2.13.0"},
        },
        "comparison": {
            "previous_version": "2",
            "previous_run_id": "fedcba",
            "rows": [{"metric": "test_roc_auc", "this": 0.9128, "previous": 0.9130, "difference": -0.0002}],
        },
    }


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">\n(.*?)</section>', page, flags=re.S))


def test_figures_go_to_their_sections_linked_in_markdown_and_embedded_in_html(
    params, recorded, figures_dir, registry, tmp_path
):
    card, page = render_model_card_files(
        params, recorded, tmp_path / "reports/model_card.md", figures_dir, registry
    )
    assert "![Title of roc.png](../plots/figures/roc.png)" in card
    assert "*Title of attributions.png.* About attributions.png." in card
    sections = _sections(page)
    for name, section in (
        ("roc.png", "metrics"),
        ("selection_rate_sex.png", "quantitative-analyses"),
        ("attributions.png", "model-examination"),
    ):
        embedded = base64.b64encode((figures_dir / name).read_bytes()).decode()
        assert f'src="data:image/png;base64,{embedded}"' in sections[section], name
    assert "../plots/figures" not in page


def test_html_is_self_contained_with_every_section_filled(params, recorded, registry, tmp_path):
    recorded["fairness"]["race"]["groups"]["<script>alert(1)</script>"] = _group(3, 0.0, None, 0.0, 1.0)
    _, page = render_model_card_files(params, recorded, tmp_path / "card.md", None, registry)
    sections = _sections(page)
    assert len(sections) >= 12
    for anchor, body in sections.items():
        text = re.sub(r"<[^>]+>", "", body.split("</h2>", 1)[1]).strip()
        assert text, f"section {anchor} is empty"
    assert "<script>" not in page and "&lt;script&gt;" in page  # data never becomes markup
    assert "default-src 'none'; img-src data:" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<title>Model card: " in page and "<nav>" in page


def test_lineage_comparison_and_label_balance(params, recorded, registry):
    recorded["augment"]["cells_before"] = [
        {"feature": "sex", "group": "Female", "label": "<=50K", "rows": 90},
        {"feature": "sex", "group": "Female", "label": ">50K", "rows": 10},
    ]
    recorded["augment"]["cells_after"] = [
        {"feature": "sex", "group": "Female", "label": "<=50K", "rows": 90},
        {"feature": "sex", "group": "Female", "label": ">50K", "rows": 30},
    ]
    card = render_model_card(params, recorded, registry=registry)
    assert "| git_commit | `abc123` |" in card and "| registered | 2026-01-02 03:04 UTC |" in card
    assert "(v2, run `fedcba`)" in card
    assert "| test_roc_auc | 0.9128 | 0.9130 | -0.0002 |" in card
    assert "| sex | Female | 100 | 10.0% | 120 | 25.0% |" in card


def test_without_a_previous_champion_the_card_says_so(params, recorded):
    card = render_model_card(
        params, recorded, registry={"comparison": {"previous_version": None, "rows": []}}
    )
    assert "There was no champion to compare with" in card


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"file": "../secret.png", "title": "t", "section": "metrics", "caption": "c"}, "file name inside"),
        ({"file": "a.png", "title": "t", "section": "appendix", "caption": "c"}, "is not one of"),
        ({"file": "gone.png", "title": "t", "section": "metrics", "caption": "c"}, "does not exist"),
        ({"file": "fake.png", "title": "t", "section": "metrics", "caption": "c"}, "is not a PNG"),
        ({"file": "a.png", "title": "t", "section": "metrics"}, "string fields"),
    ],
)
def test_bad_figure_index_entries_are_named(figures_dir, entry, message):
    (figures_dir / "fake.png").write_text("not an image")
    shutil.copy(figures_dir / "roc.png", figures_dir / "a.png")
    (figures_dir / "index.json").write_text(json.dumps([entry]))
    with pytest.raises(FairtrainError, match=message):
        load_figures(figures_dir)


def test_no_figures_folder_means_no_figures(tmp_path):
    assert load_figures(tmp_path / "absent") == [] and load_figures(None) == []


@pytest.mark.slow
def test_html_card_in_headless_chromium(params, recorded, figures_dir, registry, tmp_path):
    _, page = render_model_card_files(params, recorded, tmp_path / "card.md", figures_dir, registry)
    path = tmp_path / "model_card.html"
    path.write_text(page, encoding="utf-8")
    seen = inspect_page(path)
    assert seen["title"] == f"Model card: {params.report.model_name}"
    assert len(seen["images"]) == 3
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert len(seen["sections"]) >= 12
    empty = [s["heading"] for s in seen["sections"] if s["body"] == 0]
    assert not empty, f"empty sections: {empty}"
    assert seen["external"] == []
