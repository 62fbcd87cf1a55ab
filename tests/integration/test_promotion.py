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

    assert promotion.rollback(client, NAME) == (v1, v2)
    aliases = client.get_registered_model(NAME).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": v1, "previous-champion": v2}


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
