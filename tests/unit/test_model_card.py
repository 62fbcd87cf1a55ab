"""fairtrain.reporting.model_card.render_model_card from a small, complete ``recorded`` dict."""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

import fairtrain.reporting.model_card as model_card
from fairtrain.config import Params, load_params, params_from_dict
from fairtrain.errors import FairtrainError
from fairtrain.io import read_json
from fairtrain.reporting.model_card import (
    disparity_findings,
    load_figures,
    render_model_card,
    render_model_card_files,
    small_groups,
)
from fairtrain.reporting.recorded import MissingRecordedKey
from fairtrain.stages.augment_stage import augment_stage
from fairtrain.stages.prepare_stage import prepare_stage
from fairtrain.stages.report_stage import RECORDED
from fairtrain.stages.validate_stage import validate_stage
from tests.browser import inspect_page
from tests.helpers import PROJECT_ROOT

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
            "content_sha256": {"input": "a" * 64, "train": "b" * 64, "val": "c" * 64, "test": "d" * 64},
            "group_columns": ["sex", "race", "age_group"],
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
                "bins": {"age": {"edges": [17, 30, 50, 91], "labels": ["17-29", "30-49", "50+"]}},
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
            "steps": [{"step": "rebalance_random", "rows_before": 863, "rows_after": 982}],
            "rows_by_group_and_label": {
                "sex=Female|label=>50K": {"before": 40, "after": 63},
                "sex=Female|label=<=50K": {"before": 250, "after": 250},
            },
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
                "optimizer": "sgd",
                "momentum": 0.9,
                "lr_schedule": "cosine",
                "precision": "bf16-mixed",
                "batch_norm": True,
                "embeddings": True,
                "embedding_max_dim": 4,
                "numeric_embedding": "periodic",
                "numeric_embedding_dim": 3,
                "numeric_embedding_frequencies": 5,
                "class_weight": "balanced",
                "max_failures": 2,
                "gradient_clip_val": 0.0,
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
                "intervals": {
                    "Female": {
                        "roc_auc": {"value": 0.9391, "lower": 0.9229, "upper": 0.9533},
                        "accuracy": {"value": 0.9277, "lower": 0.9101, "upper": 0.9402},
                        # undefined in the group: value and bounds null, with the reason
                        "recall": {"value": None, "lower": None, "upper": None, "reason": "no positives"},
                    },
                    "Male": {"roc_auc": {"value": 0.8812, "lower": 0.8701, "upper": 0.8933}},
                },
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
            "baseline_kind": "train_mean",
            "convergence": {
                "tolerance": 0.01,
                "rows_over_tolerance": 3,
                "share_over_tolerance": 0.015,
                "max_share_over_tolerance": 0.05,
                "passed": True,
                "flagged_rows": [{"test_row": 4, "delta": 0.02}],
                "reason": (
                    "3 of 200 explained rows (1.5%) have |convergence delta| > 0.01; within the allowed 5.0%"
                ),
            },
            "stability": {
                "method": "bootstrap over explained rows, 200 resamples, level 0.95",
                "mean_rank_spearman": 0.9712,
                "top_3_same_share": 0.875,
                "columns": {
                    name: {
                        "rank": rank,
                        "mean_abs_lower": 0.01,
                        "mean_abs_upper": 0.2,
                        "share_lower": low,
                        "share_upper": high,
                        "rank_lower": rank,
                        "rank_upper": min(rank + 1, 3),
                        "same_rank_share": 0.9,
                    }
                    for name, rank, low, high in (
                        ("age", 1, 0.55, 0.65),
                        ("sex", 2, 0.25, 0.35),
                        ("race", 3, 0.05, 0.15),
                    )
                },
            },
            "by_group": {
                "sex": {
                    group: {
                        "rows": rows,
                        "small": rows < 20,
                        "columns": {
                            name: {
                                "mean_abs_attribution": 0.1,
                                "share": share,
                                "mean_attribution": 0.0,
                                "rank": rank,
                            }
                            for name, share, rank in columns
                        },
                    }
                    for group, rows, columns in (
                        ("Female", 12, (("age", 0.2, 2), ("sex", 0.7, 1), ("race", 0.1, 3))),
                        ("Male", 188, (("age", 0.6, 1), ("sex", 0.3, 2), ("race", 0.1, 3))),
                    )
                }
            },
            "cross_check": {
                "method": "feature_ablation",
                "baseline": "training means",
                "spearman_rank_correlation": 0.5,
                "importance": [
                    {"column": "sex", "mean_abs_attribution": 0.1, "share": 0.5, "mean_attribution": 0.0},
                    {"column": "age", "mean_abs_attribution": 0.08, "share": 0.4, "mean_attribution": 0.0},
                    {"column": "race", "mean_abs_attribution": 0.02, "share": 0.1, "mean_attribution": 0.0},
                ],
            },
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
                    "name": "ece",
                    "value": 0.0311,
                    "threshold": 0.05,
                    "passed": True,
                    "reason": "ece = 0.0311 meets the requirement <= 0.05",
                },
                {
                    "name": "sex.demographic_parity_difference",
                    "value": 0.20682362,
                    "threshold": 0.25,
                    "passed": True,
                    "reason": "sex.demographic_parity_difference = 0.2068 meets the requirement <= 0.25",
                },
                {
                    "name": "champion_non_regression.roc_auc.sex=Female",
                    "value": 0.9391,
                    "threshold": 0.91234567,
                    "champion": 0.9301,
                    "champion_interval": [0.91234567, 0.9456],
                    "passed": True,
                    "reason": "sex=Female: challenger roc_auc 0.9391 is within or better than champion v2",
                },
            ],
            "champion_non_regression": {
                "status": "compared",
                "reason": "compared with champion v2 on 1 group(s)",
                "metric": "roc_auc",
                "champion_version": "2",
                "method": "champion rescored on this test split",
                "groups": [
                    {
                        "feature": "sex",
                        "group": "Female",
                        "rows": 81,
                        "challenger": 0.9391,
                        "champion": 0.9301,
                        "champion_lower": 0.91234567,
                        "champion_upper": 0.9456,
                        "passed": True,
                        "reason": "within",
                    }
                ],
            },
            "decisions": "decision threshold",
            "summary": "all gates passed",
        },
        "mitigation": {"enabled": False, "reason": "evaluate.mitigation.enabled is false"},
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
            "mitigated": False,
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
    assert "ran 7 epoch(s) on 982 training rows in 12.5 s, best at epoch 5" in card
    assert "expanded to 23 model features" in card
    assert "863 training, 124 validation, 247 test rows" in card
    assert "training rows 863 → 982" in card
    assert "positive rate 24.3%" in card
    assert "1234 rows and 1 warning(s)" in card
    assert "77 missing value(s)" in card
    assert "| Female | 81 | no | 0.110 | 0.665 | 0.039 | n/a |" in card  # no FNR recorded
    assert "| Other | 7 | small | 0.000 | n/a | 0.000 | n/a |" in card
    assert "demographic parity difference **0.2068**" in card
    assert "| 1 | age | 0.1229 | 60.0% | 55.0%–65.0% | 1–2 | 0.0068 |" in card
    assert "mean 0.00012, max 0.00046" in card
    assert "| roc_auc | 0.9128 | 0.8 | pass | roc_auc = 0.9128 meets the requirement >= 0.8 |" in card


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
    assert "| roc_auc | n/a | 0.8 | FAIL | undefined |" in card
    assert "Oversampling" not in card
    assert "aliases" not in card
    assert "None" not in card
    assert re.search(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", card)


def test_a_missing_recorded_key_fails_loudly(params, recorded):
    del recorded["train"]["best_epoch"]
    with pytest.raises(MissingRecordedKey, match=r"^no key 'train\.best_epoch'$") as caught:
        render_model_card(params, recorded)
    # What the report stage needs to name the file and the stage that should have written it.
    assert (caught.value.source, caught.value.path) == ("train", "train.best_epoch")


def test_intervals_threshold_rule_and_baselines_are_reported(card):
    assert "| ROC-AUC | 0.9128 | 0.1111 – 0.9999 |" in card
    assert "by the rule `max_f1`" in card
    assert "| hist gradient boosting | 0.9302 | 0.8744 | 0.2744 |" in card
    # The stronger baseline is called out, not buried in the table.
    assert "hist gradient boosting baseline reaches a higher test ROC-AUC (0.9302)" in card
    assert "no intervals were computed" not in card


# --- what the pipeline records since issues 3, 4, 5 and 7 -----------------------------------


def _section(card: str, heading: str) -> str:
    """The Markdown between ``## heading`` and the next ``## ``."""
    start = card.index(f"\n## {heading}\n")
    end = card.find("\n## ", start + 1)
    return card[start : end if end != -1 else len(card)]


def test_training_configuration_lists_every_recorded_hyperparameter(card, recorded):
    section = _section(card, "Model details")
    hyperparameters = recorded["train"]["hyperparameters"]
    for key in hyperparameters:
        assert re.search(rf"^\| {key} \| `[^`]+` \|$", section, flags=re.M), key
    assert "| optimizer | `sgd` |" in section and "| lr_schedule | `cosine` |" in section
    assert "| precision | `bf16-mixed` |" in section and "| class_weight | `balanced` |" in section
    assert "| use_gpu | `false` |" in section and "| hidden_sizes | `32, 16` |" in section
    assert "batch normalisation on" in section
    assert "learned embeddings for categorical columns (at most 4 dimensions)" in section
    assert "periodic numeric embeddings (5 frequencies, 3 outputs per column)" in section
    assert "sgd (learning rate 0.002, schedule cosine" in section
    assert "up to 2 worker-group restart(s) allowed" in section


def test_data_provenance_hashes_bins_and_augmentation_steps(card):
    section = _section(card, "Training data")
    assert f"| train | `{'b' * 64}` |" in section and f"| input | `{'a' * 64}` |" in section
    assert "stratified and audited on: `sex`, `race`, `age_group`" in section
    assert "| age | 17, 30, 50, 91 | 17-29, 30-49, 50+ |" in section
    assert "| rebalance_random | 863 | 982 |" in section
    assert "| sex | Female | >50K | 40 | 63 |" in section
    assert "<=50K: 655, >50K: 208" in section  # label counts written out, not as a Python dict
    assert "{" not in section


def test_per_group_metrics_with_intervals_and_small_groups(card):
    section = _section(card, "Quantitative analyses")
    by_sex = section[section.index("### By `sex`") : section.index("### By `race`")]
    # value (lower–upper) from intervals.<group>.<metric>; only metrics some group records get a column
    # (recall is null for every group: no column)
    assert "| group | count | ROC-AUC | accuracy |\n" in by_sex
    assert "| Female | 81 | 0.939 (0.923–0.953) | 0.928 (0.910–0.940) |\n" in by_sex
    # no interval for Male's accuracy: the point value from groups, without bounds
    assert "| Male | 166 | 0.881 (0.870–0.893) | 0.815 |\n" in by_sex
    by_race = section[section.index("### By `race`") :]
    assert "| Other (small) | 7 |" in by_race and "| Other | 7 | small |" in by_race
    assert "not for this breakdown" in by_race  # intervals are on for sex but not recorded for race


def test_model_examination_convergence_stability_groups_and_cross_check(card):
    section = _section(card, "Model examination")
    assert "baseline `train_mean`" in section
    assert (
        "**Convergence check: passed** (advisory, not a gate; tolerance 0.01 on |convergence delta|; "
        "share of explained rows over it 1.5%, allowed 5.0%)" in section
    )
    assert "within the allowed 5.0%" in section
    assert "each resample's 0.971; the same top 3 columns in 87.5% of resamples" in section
    assert "| sex | Female | 12 | small | sex (70.0%), age (20.0%), race (10.0%) |" in section
    assert "| sex | Male | 188 | no | age (60.0%), sex (30.0%), race (10.0%) |" in section
    assert "`feature_ablation`" in section and "with Integrated Gradients 0.500" in section
    # a weak agreement between the two methods is called out in the caveats
    assert "ranks the columns differently (Spearman 0.500)" in _section(card, "Caveats and recommendations")


def test_failed_convergence_is_a_caveat(params, recorded):
    recorded["attributions"]["convergence"].update(
        passed=False, share_over_tolerance=0.128, reason="64 of 500 rows: raise evaluate.ig_steps"
    )
    card = render_model_card(params, recorded)
    assert "**Convergence check: FAILED**" in card
    assert "Reason: 64 of 500 rows: raise evaluate.ig_steps." in card
    assert "convergence check failed (12.8% of explained rows" in _section(
        card, "Caveats and recommendations"
    )


def test_gates_table_lists_every_check_with_reason_and_the_champion_comparison(card, recorded):
    section = _section(card, "Gate decision")
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| gate")]
    checks = recorded["gates"]["checks"]
    gate_rows = rows[: len(checks)]
    for check, row in zip(checks, gate_rows, strict=True):
        assert row.startswith(f"| {check['name']} |") and row.endswith(f"| {check['reason']} |"), row
    assert "| ece | 0.0311 | 0.05 | pass |" in section
    assert "| champion_non_regression.roc_auc.sex=Female | 0.9391 | 0.9123 | pass |" in section
    assert "compared, against champion v2" in section
    assert "| sex | Female | 81 | 0.9391 | 0.9301 | 0.9123 – 0.9456 | pass |" in section
    assert "judged on the decision threshold's decisions" in section


def test_skipped_champion_check_is_shown_as_skipped(params, recorded):
    reason = "no champion in the registry yet: nothing to regress from"
    recorded["gates"]["checks"][-1] = {
        "name": "champion_non_regression.roc_auc",
        "value": None,
        "threshold": "n/a (skipped)",
        "passed": True,
        "skipped": True,
        "reason": f"skipped: {reason}",
    }
    recorded["gates"]["champion_non_regression"] = {
        "status": "skipped",
        "reason": reason,
        "metric": "roc_auc",
        "groups": [],
    }
    section = _section(render_model_card(params, recorded), "Gate decision")
    assert (
        f"| champion_non_regression.roc_auc | n/a | n/a (skipped) | skipped | skipped: {reason} |" in section
    )
    assert f"(`roc_auc` per group): skipped — {reason}." in section
    assert "| feature | group | rows | challenger |" not in section


def test_disabled_mitigation_is_one_sentence(card):
    section = _section(card, "Bias mitigation")
    body = section.split("\n## Bias mitigation\n", 1)[1].strip()
    assert body == (
        "No bias mitigation was applied (evaluate.mitigation.enabled is false): the registered model "
        "serves the single decision threshold 0.500 for every group."
    )


def _mitigation_report() -> dict:
    def audit(dpd, eod, female_rate):
        return {
            "demographic_parity_difference": dpd,
            "equalized_odds_difference": eod,
            "groups": {
                "Female": {
                    "count": 81,
                    "accuracy": 0.93,
                    "selection_rate": female_rate,
                    "true_positive_rate": 0.66,
                    "false_positive_rate": 0.04,
                },
                "Male": {
                    "count": 166,
                    "accuracy": 0.81,
                    "selection_rate": 0.31,
                    "true_positive_rate": 0.71,
                    "false_positive_rate": 0.14,
                },
            },
        }

    return {
        "enabled": True,
        "fitted_on": "validation split",
        "evaluated_on": "test split",
        "rule": {
            "method": "fairlearn.postprocessing.ThresholdOptimizer (prefit, predict_proba)",
            "constraint": "equalized_odds",
            "objective": "accuracy_score",
            "sensitive_feature": "sex",
            "seed": 42,
            "fallback_threshold": 0.5,
            "groups": {},
        },
        "before": {
            "accuracy": 0.8523,
            "selection_rate": 0.2429,
            "fairness": {"sex": audit(0.2068, 0.1035, 0.11), "race": audit(0.1572, 0.1507, 0.11)},
        },
        "after": {
            "accuracy": 0.8401,
            "selection_rate": 0.2301,
            "fairness": {"sex": audit(0.0512, 0.0311, 0.2), "race": audit(0.1401, 0.1302, 0.2)},
        },
    }


def test_enabled_mitigation_is_a_before_after_table_and_names_the_registered_rule(params, recorded):
    recorded["mitigation"] = _mitigation_report()
    recorded["registered"]["mitigated"] = True
    card = render_model_card(params, recorded)
    section = _section(card, "Bias mitigation")
    assert "No bias mitigation was applied" not in section
    assert "constraint `equalized_odds` on `sex`" in section
    assert "The registered version 3 serves this mitigated rule" in section
    assert "| accuracy | 0.8523 | 0.8401 | -0.0122 |" in section
    assert "| selection rate | 0.2429 | 0.2301 | -0.0128 |" in section
    assert "| sex | demographic parity difference | 0.2068 | 0.0512 |" in section
    assert "| sex | equalized odds difference | 0.1035 | 0.0311 |" in section
    assert "| race | equalized odds difference | 0.1507 | 0.1302 |" in section
    assert "| Female | 81 | 0.930 → 0.930 | 0.110 → 0.200 |" in section
    assert "per-group thresholds of the mitigated rule" in _section(card, "Caveats and recommendations")
    assert "None" not in card
    # A registration that did not serve the rule is called out, not glossed over.
    recorded["registered"]["mitigated"] = False
    section = _section(render_model_card(params, recorded), "Bias mitigation")
    assert "**The registered version 3 does not serve this rule**" in section


def test_no_section_is_empty_and_no_python_or_nan_leaks(params, recorded):
    recorded["mitigation"] = _mitigation_report()
    recorded["fairness"]["sex"]["intervals"]["Male"]["brier"] = {
        "value": float("nan"),
        "lower": None,
        "upper": None,
    }
    card = render_model_card(params, recorded)
    for leak in ("None", "nan", "True", "False", "{'", "[]"):
        assert not re.search(rf"(?<![\w-]){re.escape(leak)}(?![\w-])", card), leak
    sections = re.split(r"^## ", card, flags=re.M)[1:]
    assert len(sections) >= 13
    for section in sections:
        heading, _, body = section.partition("\n")
        assert body.strip(), f"section {heading!r} is empty"


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
    recorded["registered"]["previous_champion"] = None
    card = render_model_card(
        params, recorded, registry={"comparison": {"previous_version": None, "rows": []}}
    )
    assert "There was no champion to compare with" in card


def test_a_champion_the_registry_could_not_give_is_not_called_absent(params, recorded):
    """register judged this version against champion v2 (registered.json), but the registry
    gave the card no comparison for it: the card must not say there was no champion."""
    assert recorded["registered"]["previous_champion"] == 2
    section = _section(
        render_model_card(params, recorded, registry={"comparison": {"previous_version": None, "rows": []}}),
        "Comparison with the previous champion and the baselines",
    )
    assert "There was no champion to compare with" not in section
    assert "judged against champion v2, but that version's metrics were not available" in section


def test_a_rerun_on_the_champion_is_not_called_a_first_model(params, recorded):
    """register rerun for the version that is already champion records itself as the
    champion it was judged against: the card must not say there was never a champion."""
    recorded["registered"]["previous_champion"] = recorded["registered"]["version"]
    section = _section(
        render_model_card(params, recorded, registry={"comparison": {"previous_version": None, "rows": []}}),
        "Comparison with the previous champion and the baselines",
    )
    assert "There was no champion to compare with" not in section
    assert "already the champion when the register stage last ran" in section


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


@pytest.mark.slow  # a real MLflow SQLite store (~3 s)
def test_report_stage_without_a_mitigation_report_says_so(params, recorded, tmp_path, mlflow_store):
    """The stage reads every recorded JSON; an absent mitigation report becomes one sentence."""
    # mlflow_store also sets MLflow's process-wide URI and experiment: an env var alone leaves
    # them pointing at whatever store an earlier test in this process used.
    import mlflow

    from fairtrain.stages.report_stage import report_stage

    with mlflow.start_run() as run:
        pass
    recorded["run"] = {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    inputs = {}
    for name, payload in recorded.items():
        if name == "mitigation":
            continue
        inputs[name] = tmp_path / f"{name}.json"
        inputs[name].write_text(json.dumps(payload))
    card = report_stage(params, inputs, tmp_path / "card.md", tmp_path / "card.html")
    assert "No bias mitigation was applied (no mitigation report was given to the report stage)" in card
    assert (tmp_path / "card.html").read_text().count("<section") >= 13


def test_mitigation_on_a_binned_feature_keeps_its_per_group_table(params, recorded):
    """The rule names the raw feature (`age`); the audit, and the mitigation, are per bin under
    `age_group`. Looking `age` up in the audit found nothing and the table silently vanished."""
    report = _mitigation_report()
    report["rule"]["sensitive_feature"] = "age"
    report["rule"]["bins"] = {"edges": [17, 45, 91], "labels": ["17-44", "45+"]}
    for side in ("before", "after"):
        audit = report[side]["fairness"].pop("sex")
        audit["groups"] = {"17-44": audit["groups"]["Female"], "45+": audit["groups"]["Male"]}
        report[side]["fairness"]["age_group"] = audit
    recorded["mitigation"] = report
    section = _section(render_model_card(params, recorded), "Bias mitigation")
    assert "constraint `equalized_odds` on `age`" in section
    assert "Per group of `age_group` (the bins of `age`), before → after:" in section
    assert "| 17-44 | 81 | 0.930 → 0.930 | 0.110 → 0.200 |" in section
    assert "| 45+ | 166 |" in section


def test_mitigation_group_column_is_the_audited_key(recorded):
    from fairtrain.reporting.model_card import mitigation_group_column

    report = _mitigation_report()
    assert mitigation_group_column(report) == "sex"
    report["rule"]["sensitive_feature"] = "age"  # neither `age` nor `age_group` audited
    assert mitigation_group_column(report) is None


# --- the shipped loans example through validate → prepare → augment (review findings) ---------
# The card is rendered from the records those stages really write for examples/loans (boolean and
# datetime columns, a binned numeric sensitive feature); the later stages' records stay the
# fixture's.

LOANS_PARAMS = PROJECT_ROOT / "examples/loans/params.yaml"


def _loans_params(**augment) -> Params:
    params = load_params(LOANS_PARAMS)
    raw = copy.deepcopy(params.model_dump(mode="json", by_alias=True))
    raw["augment"].update(augment)
    return params_from_dict(raw)


@pytest.fixture(scope="module")
def loans_stages(tmp_path_factory) -> dict:
    """validate and prepare on data/raw/loans.csv.gz with the shipped params (well under 1 s),
    and ``augment(**settings)`` to run the augment stage on that training split."""
    folder = tmp_path_factory.mktemp("loans")
    params = load_params(LOANS_PARAMS)
    validate_stage(
        params, LOANS_PARAMS.parents[2] / params.dataset.path, folder / "v.parquet", folder / "v.json"
    )
    prepare_stage(params, folder / "v.parquet", folder / "prepared", folder / "prepare.json")

    def augment(**settings) -> dict:
        name = "-".join(f"{k}={v}" for k, v in settings.items()) or "shipped"
        augment_stage(
            _loans_params(**settings),
            folder / "prepared/train.parquet",
            folder / f"{name}.parquet",
            folder / f"{name}.json",
        )
        return read_json(folder / f"{name}.json")

    return {
        "validation": read_json(folder / "v.json"),
        "prepare": read_json(folder / "prepare.json"),
        "augment": augment,
    }


def _loans_card(params, recorded, loans_stages, **augment_settings) -> str:
    recorded["validation"] = copy.deepcopy(loans_stages["validation"])
    recorded["prepare"] = copy.deepcopy(loans_stages["prepare"])
    recorded["augment"] = loans_stages["augment"](**augment_settings)
    return render_model_card(params, recorded)


def test_loans_inputs_count_every_kind_prepare_recorded(params, recorded, loans_stages):
    """examples/loans declares 5 numeric, 2 boolean, 1 datetime (plus one that derives nothing)
    and 3 categorical inputs: all 11 are counted, each kind described as it is encoded."""
    data = loans_stages["prepare"]["recorded"]
    assert data["boolean_features"] == ["has_guarantor", "first_time_borrower"]
    assert data["datetime_features"] == ["application_date"]
    card = _loans_card(params, recorded, loans_stages)
    line = next(line for line in card.splitlines() if line.startswith("- **Inputs:**"))
    n_features = loans_stages["prepare"]["n_features"]
    assert line.startswith(
        "- **Inputs:** 11 raw columns (5 numeric, 2 boolean, 1 datetime, 3 categorical) "
        f"expanded to {n_features} model features: "
    ), line
    assert (
        "numeric columns median-imputed and standardised, log1p first for annual_income, loan_amount" in line
    )
    assert "boolean columns 0/1, then median-imputed and standardised" in line
    assert "datetime columns each expanded into its declared date parts" in line
    assert "categorical columns one-hot over the training categories" in line
    assert line.count("one-hot") == 1  # only the categoricals are one-hot


def test_loans_ethics_names_no_adult_columns(params, recorded, loans_stages):
    """The proxy sentence named Adult's relationship and occupation for any data set."""
    section = _section(_loans_card(params, recorded, loans_stages), "Ethical considerations")
    assert "relationship" not in section and "occupation" not in section
    for feature in ("gender", "applicant_age"):  # both model inputs in the loans data
        assert f"- `{feature}` is a model input as well as an audited factor." in section
    assert "this card does not measure those correlations" in section


def _caveats(card: str) -> str:
    return _section(card, "Caveats and recommendations")


def test_noise_only_augmentation_claims_no_oversampling(params, recorded, loans_stages):
    card = _loans_card(params, recorded, loans_stages, minority_ratio=0.0, noise_std=0.05)
    assert recorded["augment"]["method"] == "gaussian_noise"
    assert "Oversampling" not in card and "Resampling" not in card
    assert "minority/majority ratio" not in card and "not calibrated" not in card
    assert (
        "Augmentation (gaussian_noise: noise 0.05 × each non-sensitive numeric column's standard deviation): "
        in _section(card, "Training data")
    )
    assert (
        "- Gaussian noise (0.05 × each column's standard deviation) was added to the non-sensitive "
        "numeric features of the training rows" in _caveats(card)
    )


def test_group_balance_caveat_states_the_measured_calibration(params, recorded, loans_stages):
    card = _loans_card(params, recorded, loans_stages, minority_ratio=0.0, group_balance="label_rate")
    augment = recorded["augment"]
    assert augment["method"] == "group_balance" and augment["rows_after"] > augment["rows_before"]
    assert "minority/majority ratio" not in card and "Oversampling" not in card
    assert "Augmentation (group_balance: `label_rate` over `gender`): " in _section(card, "Training data")
    before = augment["label_counts_before"]["approved"] / augment["rows_before"]
    after = augment["label_counts_after"]["approved"] / augment["rows_after"]
    caveats = _caveats(card)
    assert (
        f"- Resampling the training split (group_balance) moved its positive rate from {before:.1%} "
        f"to {after:.1%} (test split: {recorded['prepare']['positive_rate']['test']:.1%})" in caveats
    )
    # evaluation.json's ECE, its interval and the ECE gate, not an unchecked "not calibrated"
    assert "the expected calibration error is 0.0311 (interval 0.1111 – 0.9999; gate ≤ 0.05)." in caveats


def test_rebalancing_that_added_no_rows_is_no_caveat(params, recorded, loans_stages):
    """The shipped loans params ask for minority/majority 0.5, which the split already has:
    the step ran, added nothing, and the card claims no shift."""
    card = _loans_card(params, recorded, loans_stages)
    assert recorded["augment"]["steps"][0]["rows_before"] == recorded["augment"]["steps"][0]["rows_after"]
    assert "Augmentation (rebalance_random: minority/majority ratio 0.5): " in card
    assert "Resampling" not in card and "Oversampling" not in card
    # ratio 1.0 adds rows: then the caveat is there, with the measured calibration
    card = _loans_card(params, recorded, loans_stages, minority_ratio=1.0)
    assert "Augmentation (rebalance_random: minority/majority ratio 1): " in card
    assert "- Resampling the training split (rebalance_random) moved its positive rate" in _caveats(card)
    assert "expected calibration error is 0.0311" in _caveats(card)


def test_lineage_is_not_claimed_without_the_registry_record(params, recorded, registry):
    """Without the registry's lineage the card said the version 'carries tags for the git
    commit, data hash...' unchecked; with it, the tags shown are the ones recorded."""
    card = render_model_card(params, recorded)
    assert "carries tags" not in card
    assert "the registry's record of version 3 (its lineage tags) was not available" in card
    card = render_model_card(params, recorded, registry=registry)
    assert "registry version 3, as the registry recorded it:" in card and "| git_commit | `abc123` |" in card


# --- the report stage: unreadable inputs are named ----------------------------------------------


@pytest.fixture
def stage_inputs(recorded, tmp_path, monkeypatch) -> dict[str, Path]:
    """Every recorded input written as the JSON file its stage writes. The MLflow run must not
    be reopened by a stage whose inputs are bad: reaching it fails the test."""
    import fairtrain.stages.report_stage as report_module

    def no_mlflow(*args, **kwargs):
        raise AssertionError("the report stage reopened the MLflow run before checking its inputs")

    monkeypatch.setattr(report_module.tracking, "resume_run", no_mlflow)
    inputs = {}
    for name, payload in recorded.items():
        inputs[name] = tmp_path / f"{name}.json"
        inputs[name].write_text(json.dumps(payload))
    return inputs


def _report_error(params, inputs, tmp_path) -> str:
    from fairtrain.stages.report_stage import report_stage

    with pytest.raises(FairtrainError) as caught:
        report_stage(params, inputs, tmp_path / "card.md", tmp_path / "card.html")
    assert not (tmp_path / "card.md").exists() and not (tmp_path / "card.html").exists()
    return str(caught.value)


def test_report_stage_names_a_malformed_input(params, stage_inputs, tmp_path):
    stage_inputs["gates"].write_text('{"passed": true, "checks": [')
    message = _report_error(params, stage_inputs, tmp_path)
    assert str(stage_inputs["gates"]) in message and "is not valid JSON" in message
    assert "line 1 column" in message and "rerun `dvc repro evaluate`" in message


def test_report_stage_names_a_missing_input(params, stage_inputs, tmp_path):
    stage_inputs["augment"].unlink()
    message = _report_error(params, stage_inputs, tmp_path)
    assert f"{stage_inputs['augment']} (the augment input) does not exist" in message
    assert "rerun `dvc repro augment`" in message


def test_report_stage_names_an_input_that_is_not_an_object(params, stage_inputs, tmp_path):
    stage_inputs["registered"].write_text("[]")
    message = _report_error(params, stage_inputs, tmp_path)
    assert str(stage_inputs["registered"]) in message and "not an object" in message
    assert "rerun `dvc repro register`" in message


@pytest.mark.parametrize(
    ("name", "path", "stage"),
    [
        ("train", ("best_epoch",), "train"),  # read by the template
        ("gates", ("checks",), "evaluate"),  # read by a helper before the template
        ("prepare", ("recorded", "positive_class"), "prepare"),  # nested
        ("augment", ("label_counts_after",), "augment"),
        ("fairness", ("sex", "all_groups"), "evaluate"),
        ("registered", ("model_name",), "register"),
    ],
)
def test_report_stage_names_the_file_and_key_an_input_lacks(
    params, recorded, stage_inputs, tmp_path, name, path, stage
):
    payload = copy.deepcopy(recorded[name])
    parent = payload
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    stage_inputs[name].write_text(json.dumps(payload))
    message = _report_error(params, stage_inputs, tmp_path)
    assert message.startswith(f"{stage_inputs[name]}: no key '{name}.{'.'.join(path)}'"), message
    assert f"rerun `dvc repro {stage}`" in message


def test_a_missing_key_in_a_list_entry_is_named_with_its_position(params, recorded):
    del recorded["gates"]["checks"][1]["reason"]
    with pytest.raises(MissingRecordedKey, match=r"no key 'gates\.checks\[1\]\.reason'") as caught:
        render_model_card(params, recorded)
    assert caught.value.source == "gates"


# --- a reviewer's reading of a retraining's card ------------------------------------------------


def _champion_registry(this_data: str | None = "e" * 64, champion_data: str | None = "2" * 64) -> dict:
    """The registry's view after a retraining on appended data: the champion's own run logged
    its test metrics on its old test split (ROC-AUC 0.9243 there)."""
    return {
        "lineage": {"created": "2026-01-02 03:04 UTC", "tags": {"data_sha256": this_data or "f" * 64}},
        "comparison": {
            "previous_version": "2",
            "previous_run_id": "fedcba",
            "data_sha256": this_data,
            "previous_data_sha256": champion_data,
            "rows": [
                {"metric": "test_pr_auc", "this": 0.7712, "previous": 0.8, "difference": -0.0288},
                {"metric": "test_roc_auc", "this": 0.91279708, "previous": 0.9243, "difference": -0.0115},
            ],
        },
    }


def _rescored(recorded: dict, **overall) -> None:
    """evaluate rescored champion v2 on this test split (gates.json champion_overall)."""
    recorded["gates"]["champion_non_regression"]["champion_overall"] = overall or {
        "roc_auc": 0.9101,
        "accuracy": 0.85,
        "f1": None,  # undefined on these rows
        "precision": 0.68,
        "recall": 0.7,
        "log_loss": 0.32,
    }


def _comparison(card: str) -> str:
    return _section(card, "Comparison with the previous champion and the baselines")


def test_champion_rescored_on_this_split_is_what_the_comparison_shows(params, recorded):
    """register promoted on the champion's ROC-AUC rescored on this split, while the table set
    this version beside the champion's ROC-AUC from its own, older test split: a promotion
    that read as a drop."""
    _rescored(recorded)
    section = _comparison(render_model_card(params, recorded, registry=_champion_registry()))
    on_split, own_split = section.split("as each run logged them")
    assert (
        "Both scored on this test split (247 rows): evaluate rescored champion v2 on the same rows"
        in on_split
    )
    assert "| test_roc_auc | 0.9128 | 0.9101 | 0.0027 |" in on_split
    assert "| test_f1 | 0.6979 | n/a | n/a |" in on_split
    assert "| test_log_loss | 0.3141 | 0.3200 | -0.0059 |" in on_split
    assert "0.9243" not in section  # the old split's ROC-AUC is not set beside this one's
    # Metrics only the old run has stay, labelled as coming from another split.
    assert "| metric | this version | previous champion (its own test split) | difference |" in own_split
    assert "| test_pr_auc | 0.7712 | 0.8000 | -0.0288 |" in own_split
    assert "test_roc_auc" not in own_split
    assert "the champion's come from its own training run, scored on its own test split" in own_split
    assert (
        "**the data file differs**: `data_sha256` `eeeeeeeeeeee…` for this version, "
        "`222222222222…` for champion v2" in own_split
    )
    assert "as both runs logged them" not in section


@pytest.mark.parametrize(
    ("this_data", "champion_data", "words"),
    [
        ("e" * 64, "e" * 64, "the data file is the same for both versions, `data_sha256` `eeeeeeeeeeee…`"),
        ("e" * 64, None, "whether the data file differs is not known"),
    ],
)
def test_champion_run_metrics_say_whether_the_data_differ(params, recorded, this_data, champion_data, words):
    card = render_model_card(params, recorded, registry=_champion_registry(this_data, champion_data))
    assert words in _comparison(card)


def test_a_champion_not_rescored_on_this_split_is_said_to_be_from_its_own(params, recorded):
    """The fixture's gates.json predates champion_overall: every number is the old run's."""
    section = _comparison(render_model_card(params, recorded, registry=_champion_registry()))
    assert (
        "Champion v2 was not rescored on this test split (evaluate's output predates recording the "
        "champion's overall metrics), so no metric below compares the two models on the same rows."
    ) in section
    assert "| test_roc_auc | 0.9128 | 0.9243 | -0.0115 |" in section
    assert "previous champion (its own test split)" in section and "Both scored" not in section


def test_the_rescored_champion_is_shown_without_the_registry_run_metrics(params, recorded):
    _rescored(recorded)
    section = _comparison(
        render_model_card(params, recorded, registry={"comparison": {"previous_version": None, "rows": []}})
    )
    assert "| test_roc_auc | 0.9128 | 0.9101 | 0.0027 |" in section
    assert "were not available" not in section and "its own test split" not in section


def test_registry_comparison_carries_both_data_hashes():
    from types import SimpleNamespace

    from fairtrain.reporting.registry_context import champion_comparison

    class Client:
        def __init__(self) -> None:
            self.versions = {
                "2": SimpleNamespace(run_id="old", tags={"data_sha256": "2" * 64}),
                "3": SimpleNamespace(run_id="new", tags={"data_sha256": "e" * 64}),
            }
            self.runs = {"old": {"test_roc_auc": 0.9243, "val_loss": 0.3}, "new": {"test_roc_auc": 0.9128}}

        def get_model_version(self, name, version):
            return self.versions[version]

        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(metrics=self.runs[run_id]))

    registered = {"model_name": "m", "version": "3", "run_id": "new", "previous_champion": "2"}
    comparison = champion_comparison(Client(), registered)
    assert comparison["data_sha256"] == "e" * 64 and comparison["previous_data_sha256"] == "2" * 64
    assert [row["metric"] for row in comparison["rows"]] == ["test_roc_auc"]


WEEK_1 = {"sha256": "1" * 64, "file": "week1.csv", "rows": 300, "appended_at": "2026-01-05T10:00:00Z"}
WEEK_2 = {"sha256": "3" * 64, "file": "week2.parquet", "rows": 100, "appended_at": "2026-01-12T09:30:00Z"}


def test_appended_batches_are_named_in_the_training_data(params, recorded):
    recorded["validation"]["appended_batches"] = [WEEK_1, WEEK_2]
    section = _section(render_model_card(params, recorded), "Training data")
    assert (
        "Appended batches: 400 of these 1234 rows come from 2 labelled batch file(s) appended to "
        "`data/raw/tiny.csv` after its first 834 rows (`fairtrain append-batch`, recorded in the "
        "ledger beside the data file when validate read it), so the training data changed" in section
    )
    assert "| week1.csv | 300 | 2026-01-05 10:00 UTC | `" + "1" * 64 + "` |" in section
    assert "| week2.parquet | 100 | 2026-01-12 09:30 UTC |" in section


def test_without_appended_batches_the_training_data_is_unchanged(params, recorded):
    """No ledger (the shipped default), an empty one, or a report from before validate
    recorded them: the card says nothing of batches."""
    when = datetime(2026, 1, 2, tzinfo=UTC)
    recorded["validation"].pop("appended_batches", None)
    plain = render_model_card(params, recorded, when)
    assert "Appended batches" not in plain and "append-batch" not in plain
    recorded["validation"]["appended_batches"] = []
    assert render_model_card(params, recorded, when) == plain


@pytest.mark.parametrize(
    ("rule", "target", "words"),
    [
        ("max_f1", None, "chosen on the validation split by the rule `max_f1`."),
        (
            "target_precision",
            0.9,
            "chosen on the validation split by the rule `target_precision` (target 0.9).",
        ),
        ("target_recall", 0.8, "chosen on the validation split by the rule `target_recall` (target 0.8)."),
    ],
)
def test_a_tuned_threshold_is_said_to_be_chosen_on_validation(params, recorded, rule, target, words):
    recorded["evaluation"]["threshold_choice"].update(rule=rule, target=target)
    card = render_model_card(params, recorded)
    assert f"Test split, 247 rows. Decision threshold 0.500, {words}" in card
    assert "fixed in params" not in card


def test_a_fixed_threshold_is_not_said_to_be_chosen_on_validation(params, recorded, figures_dir):
    """The card said "chosen on the validation split by the rule `fixed`" while its caveats
    said the threshold was not tuned there. (The confusion matrix's caption comes from
    evaluate: tests/unit/test_plots.py.)"""
    recorded["evaluation"]["threshold_choice"].update(rule="fixed", target=0.5)
    card = render_model_card(params, recorded)
    assert (
        "Test split, 247 rows. Decision threshold 0.500, fixed in params (`evaluate.threshold_rule: fixed`), "
        "not tuned on the validation split." in card
    )
    assert "chosen on the validation" not in card
    assert "is fixed in params (`evaluate.threshold_rule: fixed`), not tuned" in _caveats(card)


@pytest.mark.parametrize(
    ("max_epochs", "patience", "words"),
    [
        (
            15,
            15,
            "15 epochs (early stopping by patience off: with patience 15 it cannot stop training "
            "before epoch 15; only a non-finite validation loss would)",
        ),
        (
            15,
            20,
            "15 epochs (early stopping by patience off: with patience 20 it cannot stop training "
            "before epoch 15; only a non-finite validation loss would)",
        ),
        # the first epoch always improves: the earliest stop is after epoch patience + 1 = 15
        (
            15,
            14,
            "15 epochs (early stopping by patience off: with patience 14 it cannot stop training "
            "before epoch 15; only a non-finite validation loss would)",
        ),
        (15, 13, "up to 15 epochs with early stopping (patience 13)"),
        (9, 2, "up to 9 epochs with early stopping (patience 2)"),
    ],
)
def test_early_stopping_that_cannot_trigger_is_called_off(params, recorded, max_epochs, patience, words):
    recorded["train"]["hyperparameters"].update(max_epochs=max_epochs, early_stopping_patience=patience)
    line = next(
        line
        for line in render_model_card(params, recorded).splitlines()
        if line.startswith("- **Training:**")
    )
    assert f"batch size 128 per worker, {words}, up to 2 worker-group restart(s) allowed;" in line


def test_a_failed_convergence_check_is_advisory_and_says_what_it_means(params, recorded):
    recorded["attributions"]["convergence"].update(
        passed=False, share_over_tolerance=0.128, reason="64 of 500 rows: raise evaluate.ig_steps"
    )
    card = render_model_card(params, recorded)
    examination = _section(card, "Model examination")
    assert "**Convergence check: FAILED** (advisory, not a gate; tolerance 0.01" in examination
    assert "This check does not block registration or promotion, so the gates below can pass" in examination
    assert "the attributions in this section are approximate" in examination
    assert "raise `evaluate.ig_steps` (50 in this run) and rerun evaluate" in examination
    gates = _section(card, "Gate decision")
    assert "**PASSED** — all gates passed" in gates
    assert "The attribution convergence check (under Model examination) failed, but it is advisory" in gates
    assert "not one of these gates.\n\n| gate | value |" in gates  # the table still starts a block
    assert "The check is advisory, not a gate" in _caveats(card)
    # passed: advisory still said where it is reported, and nothing about it among the gates
    passed = render_model_card(params, recorded | {"attributions": _passed_attributions(recorded)})
    assert "**Convergence check: passed** (advisory, not a gate;" in passed
    assert "convergence" not in _section(passed, "Gate decision")


def _passed_attributions(recorded: dict) -> dict:
    attributions = copy.deepcopy(recorded["attributions"])
    attributions["convergence"].update(passed=True, share_over_tolerance=0.015)
    return attributions


def test_card_words_match_what_was_recorded(card):
    """Wording a reviewer found at odds with the records: the convergence figures are of
    |delta|, prepare's hashes are of the parsed table (not the file the lineage hashes), and
    the workers average gradients themselves rather than through the DDP wrapper."""
    assert "|convergence delta|: mean 0.00012, max 0.00046" in card
    assert "Convergence delta: mean" not in card
    assert "not of the file's bytes" in _section(card, "Training data")
    training = next(line for line in card.splitlines() if line.startswith("- **Training:**"))
    assert "(DDP)" not in training and "(data-parallel: gradients averaged over the workers" in training
