"""Build the model card from recorded outputs only: every number comes from a metrics file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from fairtrain.config import Params

TEMPLATES = Path(__file__).parent / "templates"


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def disparity_findings(fairness: dict) -> list[str]:
    """Plain-language statements of the largest per-group gaps, for the ethics section."""
    findings = []
    for feature, audit in fairness.items():
        groups = {g: row for g, row in audit["groups"].items() if row.get("selection_rate") is not None}
        if len(groups) < 2:
            continue
        low = min(groups, key=lambda g: groups[g]["selection_rate"])
        high = max(groups, key=lambda g: groups[g]["selection_rate"])
        findings.append(
            f"By {feature}, the model predicts the positive class for {_pct(groups[high]['selection_rate'])} "
            f"of '{high}' (n={groups[high]['count']}) but {_pct(groups[low]['selection_rate'])} of "
            f"'{low}' (n={groups[low]['count']}); demographic parity difference "
            f"{_fmt(audit['all_groups']['demographic_parity_difference'])}, equalized odds difference "
            f"{_fmt(audit['all_groups']['equalized_odds_difference'])} (all groups)."
        )
    return findings


def small_groups(fairness: dict) -> list[str]:
    return [
        f"{feature}='{group}' (n={audit['groups'][group]['count']})"
        for feature, audit in fairness.items()
        for group in audit["excluded_groups"]
    ]


def render_model_card(params: Params, recorded: dict, generated_at: datetime | None = None) -> str:
    """``recorded`` holds the parsed JSON outputs: validation, prepare, augment, train,
    evaluation, fairness, attributions, gates, registered, run (the run reference).

    Only ``params.report`` (intended use, wording) comes from the current params: everything
    that describes the model comes from what its stages recorded.
    """
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    template = env.get_template("model_card.md.j2")
    return template.render(
        params=params,
        generated_at=(generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        findings=disparity_findings(recorded["fairness"]),
        small_groups=small_groups(recorded["fairness"]),
        gate_thresholds={check["name"]: check["threshold"] for check in recorded["gates"]["checks"]},
        **recorded,
    )
