"""Champion decisions and run bookkeeping against a real MLflow SQLite registry."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.errors import TrackingError
from fairtrain.registry import promotion

pytestmark = pytest.mark.slow
NAME = "promotion-test"


def _version(client: MlflowClient, **test_metrics: float) -> str:
    """A registered version whose run has the given test metrics."""
    with mlflow.start_run() as run:
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
    if not client.search_registered_models(f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    return str(client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run.info.run_id).version)


def _decide(client, version, metric, value, gates_passed=True, margin=0.0):
    return promotion.decide_promotion(client, NAME, version, metric, value, gates_passed, margin)


def test_promotion_respects_margin_and_metric_direction(mlflow_store):
    client = MlflowClient()
    v1 = _version(client, roc_auc=0.90, log_loss=0.30)
    first = _decide(client, v1, "roc_auc", 0.90)
    assert first.promote and "no champion" in first.reason
    promotion.make_champion(client, NAME, v1, first.reason)

    v2 = _version(client, roc_auc=0.905, log_loss=0.35)
    assert not _decide(client, v2, "roc_auc", 0.905, margin=0.01).promote
    assert _decide(client, v2, "roc_auc", 0.905, margin=0.001).promote
    # log loss: lower is better, so 0.35 against the champion's 0.30 is worse.
    worse = _decide(client, v2, "log_loss", 0.35)
    assert not worse.promote and "lower is better" in worse.reason
    assert _decide(client, v2, "log_loss", 0.25).promote
    failed = _decide(client, v2, "roc_auc", 0.99, gates_passed=False)
    assert not failed.promote and "gate failed" in failed.reason


def test_reused_champion_whose_gates_now_fail_says_so(mlflow_store):
    client = MlflowClient()
    v1 = _version(client, roc_auc=0.9)
    promotion.make_champion(client, NAME, v1, "first")
    again = _decide(client, v1, "roc_auc", 0.9, gates_passed=False)
    assert not again.promote and "remains champion" in again.reason and "--rollback" in again.reason


def test_make_champion_keeps_the_previous_one_and_rollback_swaps(mlflow_store):
    client = MlflowClient()
    v1, v2 = _version(client, roc_auc=0.9), _version(client, roc_auc=0.95)
    with pytest.raises(TrackingError, match="no 'previous-champion'"):
        promotion.rollback(client, NAME)
    assert promotion.make_champion(client, NAME, v1, "first") is None
    assert promotion.make_champion(client, NAME, v2, "better") == v1
    aliases = client.get_registered_model(NAME).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": v2, "previous-champion": v1}
    assert "replaced by v" + v2 in client.get_model_version(NAME, v1).tags["demoted"]

    # The version rolled back to needs passed gates, as a promotion does (v1 has no record).
    with pytest.raises(TrackingError, match=f"v{v1} did not pass its gates .*--force to roll back"):
        promotion.rollback(client, NAME)
    assert {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()}["champion"] == v2
    client.set_model_version_tag(NAME, v1, "gate_decision", "passed")
    assert promotion.rollback(client, NAME) == (v1, v2)
    aliases = client.get_registered_model(NAME).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": v1, "previous-champion": v2}
    assert client.get_model_version(NAME, v1).tags["promotion"] == f"rollback from v{v2}"
    # Back to v2 (no gate record either): only forced, and its tag says so.
    assert promotion.rollback(client, NAME, force=True) == (v2, v1)
    assert (
        client.get_model_version(NAME, v2).tags["promotion"]
        == f"rollback from v{v1} (forced past failed gates)"
    )


def test_a_later_stage_failing_keeps_the_training_run_finished(mlflow_store):
    experiment = tracking.configure("runs")
    with mlflow.start_run() as run:
        mlflow.log_metric("best_val_loss", 0.3)
    ref = tracking.RunRef(run.info.run_id, experiment, mlflow_store)

    with pytest.raises(ValueError, match="boom"), tracking.resume_run(ref, "evaluate"):
        mlflow.log_metric("test_fairness_gap", 0.0)
        raise ValueError("boom")
    after = mlflow.get_run(ref.run_id)
    assert after.info.status == "FINISHED"
    assert after.data.tags["fairtrain.failed.evaluate"] == "ValueError: boom"
    assert after.data.metrics["test_fairness_gap"] == 0.0  # a real zero, not NaN

    with tracking.resume_run(ref, "evaluate"):
        mlflow.log_metric("test_roc_auc", 0.9)
    after = mlflow.get_run(ref.run_id)
    assert after.info.status == "FINISHED"
    assert "fairtrain.failed.evaluate" not in after.data.tags


def test_a_run_missing_from_the_store_is_a_clear_error(mlflow_store):
    ref = tracking.RunRef("0" * 32, "0", "sqlite:///elsewhere.db")
    with (
        pytest.raises(
            TrackingError, match=r"not in the tracking store .* recorded it in sqlite:///elsewhere\.db"
        ),
        tracking.resume_run(ref, "report"),
    ):
        pass


def test_a_champion_whose_metric_is_undefined_does_not_block_promotion(mlflow_store):
    # Evaluate logs an undefined metric as NaN; every comparison with NaN is false, which
    # refused every challenger for good.
    client = MlflowClient()
    v1 = _version(client, roc_auc=float("nan"))
    promotion.make_champion(client, NAME, v1, "test")
    v2 = _version(client, roc_auc=0.9)
    decision = _decide(client, v2, "roc_auc", 0.9, margin=0.01)
    assert decision.promote and f"champion v{v1} has no test_roc_auc" in decision.reason


def test_no_champion_means_no_model_or_no_alias_and_a_registry_that_fails_is_an_error(
    mlflow_store, monkeypatch
):
    client = MlflowClient()
    assert tracking.version_by_alias(client, NAME, promotion.CHAMPION) is None  # no such model
    _version(client, roc_auc=0.9)
    assert tracking.version_by_alias(client, NAME, promotion.CHAMPION) is None  # no such alias
    # A registry that cannot answer (here: nothing listens on the port) is not "no champion":
    # that would promote without comparing and let the non-regression gate pass.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError, match="cannot read alias 'champion'"):
        tracking.version_by_alias(MlflowClient("http://127.0.0.1:9"), NAME, promotion.CHAMPION)


def _same_run_versions(client: MlflowClient, count: int, **test_metrics: float) -> list[str]:
    """``count`` versions of one run (as a new threshold or serving code registers them)."""
    with mlflow.start_run() as run:
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
    if not client.search_registered_models(f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    uri, run_id = f"runs:/{run.info.run_id}/model", run.info.run_id
    return [str(client.create_model_version(NAME, uri, run_id).version) for _ in range(count)]


def _compared(version: str, **overall: float | None) -> dict:
    """evaluate's champion_non_regression record after it rescored champion ``version``."""
    return {
        "status": "compared",
        "metric": "roc_auc",
        "champion_version": version,
        "champion_overall": overall,
    }


def test_a_version_of_the_champions_own_run_is_promoted_on_its_gates(mlflow_store):
    # Same weights, new decision rule: its test metric equals the champion's, an improvement
    # of 0.0 that never beat the margin.
    client = MlflowClient()
    v1, v2 = _same_run_versions(client, 2, roc_auc=0.9)
    promotion.make_champion(client, NAME, v1, "first")
    decision = _decide(client, v2, "roc_auc", 0.9)
    assert decision.promote and decision.previous_champion == v1
    assert f"same training run as champion v{v1}" in decision.reason and "gates passed" in decision.reason
    failed = _decide(client, v2, "roc_auc", 0.9, gates_passed=False)
    assert not failed.promote and "gate failed" in failed.reason
    # A label metric changes with the decision rule: compared as for any other version.
    decide = promotion.decide_promotion
    worse = decide(client, NAME, v2, "accuracy", 0.80, True, 0.0, _compared(v1, accuracy=0.85))
    assert not worse.promote and "same training run" not in worse.reason
    assert "0.8500 on this test split" in worse.reason


def test_the_champion_is_judged_by_its_score_on_this_test_split(mlflow_store):
    client = MlflowClient()
    v1 = _version(client, roc_auc=0.95)  # measured on its own, older test split
    promotion.make_champion(client, NAME, v1, "first")
    v2 = _version(client, roc_auc=0.90)

    decide = promotion.decide_promotion
    better = decide(client, NAME, v2, "roc_auc", 0.90, True, 0.0, _compared(v1, roc_auc=0.85, log_loss=0.4))
    assert better.promote and "0.8500 on this test split" in better.reason
    worse = decide(client, NAME, v2, "log_loss", 0.45, True, 0.0, _compared(v1, roc_auc=0.85, log_loss=0.4))
    assert not worse.promote and "0.4000 on this test split" in worse.reason
    undefined = decide(client, NAME, v2, "roc_auc", 0.90, True, 0.0, _compared(v1, roc_auc=None))
    assert undefined.promote and "undefined on this test split" in undefined.reason


def test_a_champion_changed_since_evaluate_blocks_promotion(mlflow_store):
    client = MlflowClient()
    v1, v2, v3 = (_version(client, roc_auc=0.8) for _ in range(3))
    promotion.make_champion(client, NAME, v2, "manual promotion")  # after evaluate scored v1
    stale = promotion.decide_promotion(
        client, NAME, v3, "roc_auc", 0.99, True, 0.0, _compared(v1, roc_auc=0.8)
    )
    assert not stale.promote
    assert f"champion v{v1}" in stale.reason and f"now v{v2}" in stale.reason
    assert "rerun evaluate" in stale.reason
    # evaluate found no champion at all; one was promoted before register ran.
    none_then = {"status": "skipped", "reason": "no champion", "metric": "roc_auc", "champion_version": None}
    late = promotion.decide_promotion(client, NAME, v3, "roc_auc", 0.99, True, 0.0, none_then)
    assert not late.promote and "with no champion" in late.reason and "rerun evaluate" in late.reason


def test_without_a_score_on_this_split_the_run_metric_is_used_and_the_reason_says_so(mlflow_store):
    client = MlflowClient()
    v1 = _version(client, roc_auc=0.80)
    promotion.make_champion(client, NAME, v1, "first")
    v2 = _version(client, roc_auc=0.85)
    disabled = {
        "status": "skipped",
        "reason": "disabled (evaluate.gates...)",
        "metric": "roc_auc",
        "groups": [],
    }
    old_compared = {
        "status": "compared",
        "metric": "roc_auc",
        "champion_version": v1,
    }  # before champion_overall
    for record in (None, disabled, old_compared):
        decision = promotion.decide_promotion(client, NAME, v2, "roc_auc", 0.85, True, 0.0, record)
        assert decision.promote and "0.8000 on its own training run's test split" in decision.reason
        assert "across splits" in decision.reason
