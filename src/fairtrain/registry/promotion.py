"""Registry aliases: who is champion, and how that changes.

- ``challenger``: always the newest registered version.
- ``champion``: moves only when every gate passed and the version beats the current
  champion's primary test metric by more than the margin (or by an explicit promotion). The
  champion's metric is the one evaluate measured by rescoring it on this test split; a
  version from the champion's own training run (same weights, new decision rule or serving
  code) needs only its gates.
- ``previous-champion``: the champion before the last change, kept so that one command
  rolls back.

Every alias change is also written as tags on the versions involved, so the registry itself tells
who was promoted or demoted, when and why.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from fairtrain.config import PRIMARY_METRICS
from fairtrain.errors import TrackingError
from fairtrain.tracking import version_by_alias

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"


def _number(version: ModelVersion | str | int | None) -> str | None:
    # MLflow returns versions as int from some calls and str from others: compare as str.
    if version is None:
        return None
    return str(version.version if isinstance(version, ModelVersion) else version)


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    previous_champion: str | None


_UNKNOWN = object()  # evaluate did not record which champion it saw
# Primary metrics of the scores alone, which no threshold or decision rule changes.
SCORE_METRICS = ("roc_auc", "log_loss")


PREDATES_OVERALL = "evaluate's output predates recording the champion's overall metrics"


def rescored_champion(non_regression: dict | None) -> tuple[object, dict | None, str]:
    """From evaluate's ``champion_non_regression`` record (in gates.json): (the champion version
    evaluate scored, None for "there was none", or ``_UNKNOWN``; its overall metrics on this
    test split, None when not measured; why they were not measured). Read here for the
    promotion decision and by the model card's comparison alike."""
    if not isinstance(non_regression, dict):
        return _UNKNOWN, None, "evaluate recorded no champion comparison"
    status = non_regression.get("status")
    version = non_regression.get("champion_version", _UNKNOWN)
    version = version if version is None or version is _UNKNOWN else str(version)
    if status == "compared":
        overall = non_regression.get("champion_overall")
        if isinstance(overall, dict) and overall:
            return version, overall, ""
        return version, None, PREDATES_OVERALL
    if status == "unavailable":
        return version, None, f"champion v{version} could not score this test split"
    why = non_regression.get("reason") or "its champion non-regression check was skipped"
    return version, None, f"evaluate did not score the champion on this split: {why}"


def _evaluated_champion(non_regression: dict | None, metric: str) -> tuple[object, float | None, str]:
    """``rescored_champion`` for one metric: (version, its ``metric`` on this test split or
    None, why not)."""
    version, overall, why = rescored_champion(non_regression)
    if overall is None:
        return version, None, why
    if metric not in overall:
        return version, None, PREDATES_OVERALL
    value = overall[metric]
    return version, (None if value is None else float(value)), ""


def decide_promotion(
    client: MlflowClient,
    name: str,
    version: str,
    metric: str,
    value: float | None,
    gates_passed: bool,
    margin: float,
    non_regression: dict | None = None,
) -> PromotionDecision:
    """Whether ``version`` (with test ``metric`` = ``value``) should become champion.

    ``non_regression``: evaluate's ``champion_non_regression`` record (in gates.json). When
    it holds the champion's ``metric`` on this test split, that is what the version must beat;
    otherwise the champion's training run metric ``test_<metric>``, from its own test split.
    A version from the champion's own training run holds the same weights: its gates decide.
    """
    champion = version_by_alias(client, name, CHAMPION)
    previous = _number(champion)
    if previous == _number(version):
        if gates_passed:
            return PromotionDecision(True, "already the champion", previous)
        return PromotionDecision(
            False,
            "remains champion although its gates now fail (were they tightened?); promote "
            "another version or roll back with `fairtrain promote --rollback`",
            previous,
        )
    if not gates_passed:
        return PromotionDecision(False, "not promoted: at least one gate failed", previous)
    seen, on_split, unscored = _evaluated_champion(non_regression, metric)
    if seen is not _UNKNOWN and seen != previous:
        then = f"champion v{seen}" if seen is not None else "no champion"
        now = f"v{previous}" if previous is not None else "no champion"
        return PromotionDecision(
            False,
            f"not promoted: evaluate compared this version with {then}, but the champion is now "
            f"{now} (changed since evaluate ran, e.g. by `fairtrain promote`); rerun evaluate "
            "and what follows it (`dvc repro -s -f evaluate && dvc repro`: the registry is not "
            "a DVC dependency, so a plain `dvc repro` sees nothing to do) to compare with the "
            "current champion",
            previous,
        )
    if value is None:
        return PromotionDecision(False, f"not promoted: test {metric} is undefined", previous)
    if champion is None:
        return PromotionDecision(True, "promoted: gates passed and there was no champion", previous)
    # Same weights score alike whatever the decision rule: only a threshold-free metric makes
    # the comparison an empty one. A label metric (accuracy, F1...) changes with the rule and
    # is compared below.
    same_run = client.get_model_version(name, str(version)).run_id == champion.run_id
    if same_run and metric in SCORE_METRICS:
        return PromotionDecision(
            True,
            f"promoted: same training run as champion v{previous} (new decision rule or serving "
            "code) and its gates passed",
            previous,
        )
    if seen is not _UNKNOWN and not unscored:
        best, source = on_split, "on this test split"
        if best is None:
            return PromotionDecision(
                True, f"promoted: champion v{previous}'s {metric} is undefined on this test split", previous
            )
    else:
        best = client.get_run(champion.run_id).data.metrics.get(f"test_{metric}")
        source = (
            f"on its own training run's test split (a comparison across splits, apples to oranges "
            f"when the data changed: {unscored})"
        )
        if best is None or math.isnan(best):  # evaluate logs an undefined metric as NaN
            return PromotionDecision(True, f"promoted: champion v{previous} has no test_{metric}", previous)
    higher_is_better = PRIMARY_METRICS[metric]
    gain = value - best if higher_is_better else best - value
    better = "higher" if higher_is_better else "lower"
    comparison = f"test {metric} {value:.4f} vs champion v{previous} {best:.4f} {source} ({better} is better)"
    if gain > margin:
        return PromotionDecision(
            True, f"promoted: {comparison}, improvement {gain:.4f} > margin {margin}", previous
        )
    return PromotionDecision(
        False, f"not promoted: {comparison}, improvement {gain:.4f} is not above margin {margin}", previous
    )


def make_champion(client: MlflowClient, name: str, version: str, reason: str) -> str | None:
    """Point ``champion`` at ``version``; the one it replaces becomes ``previous-champion``.

    Returns the replaced champion's version (None if there was none or it is the same one).
    """
    version = _number(version)
    current = _number(version_by_alias(client, name, CHAMPION))
    if current == version:
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
        client.set_model_version_tag(name, current, "demoted", f"{stamp}: replaced by v{version}")
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", reason)
    client.set_model_version_tag(name, version, "promoted_at", stamp)
    return current


def gates_passed(name: str, version: ModelVersion, force: bool, action: str) -> bool:
    """Whether ``version`` passed its gates (its ``gate_decision`` tag); one that did not is
    refused unless ``force``, naming ``action`` ("promote it", "roll back to it"). The one rule
    for a manual promotion and a rollback: rolling back to a version once forced past its
    gates must not make it champion again unnoticed."""
    if version.tags.get("gate_decision") == "passed":
        return True
    if not force:
        summary = version.tags.get("gate_summary", "no gate record")
        raise TrackingError(
            f"{name} v{version.version} did not pass its gates ({summary}); use --force to {action} anyway"
        )
    return False


def rollback(client: MlflowClient, name: str, force: bool = False) -> tuple[str, str]:
    """Swap ``champion`` and ``previous-champion``; returns (new champion, demoted version).

    A swap (rather than dropping the alias) makes a rollback itself undoable with a second
    rollback. The version rolled back to must have passed its gates, as for a promotion,
    unless ``force`` (then the ``promotion`` tag says it was forced).
    """
    previous = version_by_alias(client, name, PREVIOUS_CHAMPION)
    current = _number(version_by_alias(client, name, CHAMPION))
    if previous is None:
        raise TrackingError(f"model {name!r} has no {PREVIOUS_CHAMPION!r} version to roll back to")
    if current is None:
        raise TrackingError(f"model {name!r} has no {CHAMPION!r} to roll back from")
    passed = gates_passed(name, previous, force, "roll back to it")
    reason = f"rollback from v{current}" + ("" if passed else " (forced past failed gates)")
    make_champion(client, name, str(previous.version), reason)
    return str(previous.version), current
