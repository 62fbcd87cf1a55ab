"""Promotion gates: thresholds from params applied to the evaluation results."""

from __future__ import annotations

from fairtrain.config import GROUP_GATE_METRICS, GatesConfig

FAIRNESS_GATES = ("demographic_parity_difference", "equalized_odds_difference")
# Every threshold of GatesConfig (its other field, champion_non_regression, is a section).
THRESHOLD_KEYS = tuple(name for name in GatesConfig.model_fields if name.startswith(("min_", "max_")))


def unset_thresholds(gates: GatesConfig) -> dict[str, float]:
    """The thresholds the params file leaves out, with the value they fall back to.

    The fallbacks (ROC-AUC >= 0, differences and ECE <= 1) hold nothing back: a gate left out
    is a gate that always passes on a defined value, which a reviewer should hear about."""
    return {key: getattr(gates, key) for key in THRESHOLD_KEYS if key not in gates.model_fields_set}


def _check(
    name: str,
    value: float | None,
    threshold: float,
    higher_is_better: bool,
    undefined_because: str = "",
    unset_key: str | None = None,
) -> dict:
    """``unset_key``: the params key of a threshold the params file left out; the check and
    its reason then say that the threshold is a fallback, not a requirement someone set."""
    check = _measured(name, value, threshold, higher_is_better, undefined_because)
    if unset_key is not None:
        check["threshold_set"] = False
        check["reason"] += f" (evaluate.gates.{unset_key} is not set in params: fallback {threshold})"
    return check


def _measured(
    name: str, value: float | None, threshold: float, higher_is_better: bool, undefined_because: str
) -> dict:
    if value is None:
        # Fail closed: a property that cannot be measured cannot be claimed.
        why = undefined_because or "it is undefined on the test split"
        return {
            "name": name,
            "value": None,
            "threshold": threshold,
            "passed": False,
            "reason": f"{name} cannot be checked: {why}",
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


def _why_undefined(feature: str, audit: dict) -> str:
    excluded = audit.get("excluded_groups", [])
    if len(audit["groups"]) - len(excluded) >= 2:
        return ""
    return (
        f"fewer than two groups of {feature} have at least {audit.get('min_group_size')} test rows "
        f"(too small: {', '.join(excluded) or 'none'})"
    )


def _non_regression_checks(result: dict) -> list[dict]:
    """One check per compared group, or a single passing "skipped" check with the reason."""
    name = f"champion_non_regression.{result['metric']}"
    if result["status"] == "skipped":
        return [
            {
                "name": name,
                "value": None,
                "threshold": "n/a (skipped)",  # text: there is no champion interval to compare with
                "passed": True,
                "skipped": True,
                "reason": f"skipped: {result['reason']}",
            }
        ]
    if result["status"] == "unavailable":  # fail closed: the comparison could not be made
        return [
            {"name": name, "value": None, "threshold": "n/a", "passed": False, "reason": result["reason"]}
        ]
    # The bound the challenger was held to: the interval's lower end for a higher-is-better
    # metric, its upper end for log loss and Brier (the same side champion.py compares with).
    bound = "champion_lower" if GROUP_GATE_METRICS[result["metric"]] else "champion_upper"
    return [
        {
            "name": f"{name}.{g['feature']}={g['group']}",
            "value": g["challenger"],
            "threshold": g[bound] if g[bound] is not None else g["champion"],
            "champion": g["champion"],
            "champion_interval": [g["champion_lower"], g["champion_upper"]],
            "passed": g["passed"],
            "reason": g["reason"],
        }
        for g in result["groups"]
    ]


def evaluate_gates(
    overall: dict, fairness: dict, gates: GatesConfig, non_regression: dict | None = None
) -> dict:
    """Every check with its value, threshold and reason; ``passed`` only if all pass.

    ``fairness`` is the audit of the decisions that will be served (the mitigated ones when
    mitigation is on); ``non_regression`` is ``champion.non_regression``'s result.
    """
    unset = unset_thresholds(gates)

    def check(name: str, value: float | None, key: str, undefined_because: str = "") -> dict:
        """The check of ``value`` against the threshold ``evaluate.gates.<key>``."""
        return _check(
            name,
            value,
            getattr(gates, key),
            higher_is_better=key.startswith("min_"),
            undefined_because=undefined_because,
            unset_key=key if key in unset else None,
        )

    checks = [
        check("roc_auc", overall.get("roc_auc"), "min_roc_auc"),
        check("ece", overall.get("ece"), "max_expected_calibration_error"),
    ]
    for feature, audit in fairness.items():
        if not audit.get("gated", True):
            continue
        why = _why_undefined(feature, audit)
        for metric in FAIRNESS_GATES:
            checks.append(check(f"{feature}.{metric}", audit[metric], f"max_{metric}", why))
    if non_regression is not None:
        checks.extend(_non_regression_checks(non_regression))
    failed = [c["name"] for c in checks if not c["passed"]]
    return {
        "passed": not failed,
        "failed": failed,
        "checks": checks,
        **({"champion_non_regression": non_regression} if non_regression is not None else {}),
        "summary": "all gates passed" if not failed else f"failed gates: {', '.join(failed)}",
    }
