"""The drift report as files: JSON (for scripts) and a self-contained HTML page (for people)."""

from __future__ import annotations

import html
import logging
from pathlib import Path

from fairtrain.config import Params
from fairtrain.errors import FairtrainError
from fairtrain.io import json_text, read_json, replaced_together
from fairtrain.monitoring.drift import RETRAIN, check_drift, format_value, load_batch

log = logging.getLogger(__name__)

KIND_TITLES = {
    "psi": "Population stability index (PSI)",
    "ks": "Kolmogorov-Smirnov statistic (numerics)",
    "label_rate": "Positive-label rate",
    "group_label_rate": "Positive-label rate per sensitive group",
}
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
.drifted{background:#fde2e1}.decision{font-size:1.2em;padding:.5em;border:1px solid #999}
"""


def drift_section_html(report: dict) -> str:
    """An HTML ``<section>`` with the decision and one table per kind of check."""
    e = html.escape
    parts = [
        '<section id="drift">',
        "<h2>Data drift</h2>",
        f'<p class="decision"><strong>Decision: {e(report["decision"].replace("_", " "))}</strong> — '
        f"{e(report['reason'])}.</p>",
        f"<p>Batch <code>{e(str(report['batch']['source']))}</code>, {report['batch']['rows']} rows, "
        f"against the {e(report['reference']['split'])} split ({report['reference']['rows']} rows).</p>",
    ]
    for kind, title in KIND_TITLES.items():
        rows = [c for c in report["checks"] if c["kind"] == kind]
        if not rows:
            continue
        parts.append(
            f"<h3>{e(title)}</h3><table><tr><th>column</th><th>value</th><th>threshold</th>"
            "<th>result</th><th>detail</th></tr>"
        )
        for c in rows:
            if kind == "ks":
                detail = (
                    f"p-value {c['p_value']:.3g}; median {c['reference_median']:g} → {c['batch_median']:g}"
                )
            elif kind == "psi":
                detail = (
                    ", ".join(
                        f"{b}: {r:.1%} → {n:.1%}"
                        for b, r, n in zip(c["bins"], c["reference_shares"], c["batch_shares"], strict=True)
                        if abs(n - r) >= 0.01
                    )
                    or "no bin moved by 1 point or more"
                )
            else:
                detail = (
                    f"{format_value(c.get('reference_rate'))} → {format_value(c['batch_rate'])}"
                    + (f" (n={c['batch_count']})" if "batch_count" in c else "")
                    + (f"; {c['skipped']}" if c.get("skipped") else "")
                )
            result = "DRIFT" if c["drifted"] else ("skipped" if c.get("skipped") else "ok")
            parts.append(
                f'<tr class="{"drifted" if c["drifted"] else ""}"><td>{e(str(c["column"]))}</td>'
                f"<td>{format_value(c['value'])}</td><td>{c['threshold']}</td><td>{result}</td>"
                f"<td>{e(detail)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</section>")
    return "\n".join(parts)


def drift_page_html(report: dict) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Drift report</title>'
        f"<style>{STYLE}</style></head><body>{drift_section_html(report)}</body></html>\n"
    )


def run_drift_check(
    params: Params, batch_path: Path, reference_path: Path, json_path: Path | None, html_path: Path | None
) -> dict:
    """Load the batch and the reference, check, write the report files; returns the report."""
    if not Path(reference_path).exists():
        raise FairtrainError(
            f"{reference_path}: reference statistics not found (written by the prepare stage; "
            "run `dvc pull` or `dvc repro prepare`)"
        )
    report = check_drift(
        load_batch(batch_path, params.dataset, params.validation),
        read_json(reference_path),
        params.dataset,
        params.drift,
        source=str(batch_path),
    )
    # Both files are put in place together: a failed write leaves the earlier pair as it was.
    try:
        with replaced_together() as staged:
            if json_path:
                staged.file(json_path).write_text(json_text(report))
            if html_path:
                staged.file(html_path).write_text(drift_page_html(report), encoding="utf-8")
    except OSError as error:
        targets = " and ".join(str(path) for path in (json_path, html_path) if path)
        raise FairtrainError(f"{targets}: cannot write the drift report: {error}") from None
    log.info("drift check of %s: %s (%s)", batch_path, report["decision"], report["reason"])
    return report


__all__ = ["RETRAIN", "drift_page_html", "drift_section_html", "run_drift_check"]
