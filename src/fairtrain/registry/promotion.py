"""Registry aliases: who is champion, and how that changes.

- ``challenger``: always the newest registered version.
- ``champion``: moves only when every gate passed and the version beats the current
  champion's primary test metric by more than the margin (or by an explicit promotion).
- ``previous-champion``: the champion before the last change, kept so that one command
  rolls back.

Every change is also written as tags on the versions involved, so the registry itself tells
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


def decide_promotion(
    client: MlflowClient,
    name: str,
    version: str,
    metric: str,
    value: float | None,
    gates_passed: bool,
    margin: float,
) -> PromotionDecision:
    """Whether ``version`` (with test ``metric`` = ``value``) should become champion."""
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
    if value is None:
        return PromotionDecision(False, f"not promoted: test {metric} is undefined", previous)
    if champion is None:
        return PromotionDecision(True, "promoted: gates passed and there was no champion", previous)
    best = client.get_run(champion.run_id).data.metrics.get(f"test_{metric}")
    if best is None or math.isnan(best):  # evaluate logs an undefined metric as NaN
        return PromotionDecision(True, f"promoted: champion v{previous} has no test_{metric}", previous)
    higher_is_better = PRIMARY_METRICS[metric]
    gain = value - best if higher_is_better else best - value
    better = "higher" if higher_is_better else "lower"
    comparison = f"test {metric} {value:.4f} vs champion v{previous} {best:.4f} ({better} is better)"
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


def rollback(client: MlflowClient, name: str) -> tuple[str, str]:
    """Swap ``champion`` and ``previous-champion``; returns (new champion, demoted version).

    A swap (rather than dropping the alias) makes a rollback itself undoable with a second
    rollback.
    """
    previous = _number(version_by_alias(client, name, PREVIOUS_CHAMPION))
    current = _number(version_by_alias(client, name, CHAMPION))
    if previous is None:
        raise TrackingError(f"model {name!r} has no {PREVIOUS_CHAMPION!r} version to roll back to")
    if current is None:
        raise TrackingError(f"model {name!r} has no {CHAMPION!r} to roll back from")
    make_champion(client, name, previous, f"rollback from v{current}")
    return previous, current
