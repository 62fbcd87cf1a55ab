"""Promotion gates: thresholds from params applied to the evaluation results."""

from __future__ import annotations

from fairtrain.config import GatesConfig


def _check(name: str, value: float | None, threshold: float, higher_is_better: bool) -> dict:
    if value is None:
        return {
            "name": name,
            "value": None,
            "threshold": threshold,
            "passed": False,
            "reason": f"{name} is undefined on the test split",
        }
    passed = value >= threshold if higher_is_better else value <= threshold
    relation = ">=" if higher_is_better else "<="
    verdict = "meets" if passed else "fails"
    return {
        "name": name,
        "value": value,
        "threshold": threshold,
        "passed": passed,
        "reason": f"{name} = {value:.4f} {verdict} the requirement {relation} {threshold}",
    }


def evaluate_gates(overall: dict, fairness: dict, gates: GatesConfig) -> dict:
    """Every check with its value, threshold and reason; ``passed`` only if all pass."""
    checks = [_check("roc_auc", overall.get("roc_auc"), gates.min_roc_auc, higher_is_better=True)]
    for feature, audit in fairness.items():
        checks.append(
            _check(
                f"{feature}.demographic_parity_difference",
                audit["demographic_parity_difference"],
                gates.max_demographic_parity_difference,
                higher_is_better=False,
            )
        )
        checks.append(
            _check(
                f"{feature}.equalized_odds_difference",
                audit["equalized_odds_difference"],
                gates.max_equalized_odds_difference,
                higher_is_better=False,
            )
        )
    failed = [c["name"] for c in checks if not c["passed"]]
    return {
        "passed": not failed,
        "failed": failed,
        "checks": checks,
        "summary": "all gates passed" if not failed else f"failed gates: {', '.join(failed)}",
    }
