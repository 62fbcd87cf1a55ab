"""The register stage: pyfunc model into the run, a registry version, aliases, lineage tags."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.config import Params
from fairtrain.errors import TrackingError
from fairtrain.evaluation.champion import serving_rows
from fairtrain.io import read_stage_output, write_json
from fairtrain.registry import promotion
from fairtrain.registry import register as reg
from fairtrain.registry.lineage import lineage_tags
from fairtrain.registry.pyfunc_model import MODEL_DIR, PREPROCESSOR, SERVING

log = logging.getLogger(__name__)
EXAMPLE_ROWS = 5
# Set on every register run of a version whose ``promotion`` tag is kept (a rerun: the tag
# keeps the reason its alias last moved or, never promoted, the first decision).
LAST_CHECKED_TAG = "last_checked"


def input_example(test: pd.DataFrame, params: Params) -> pd.DataFrame:
    """A few test rows as a user would send them (see ``serving_rows``)."""
    return serving_rows(test.head(EXAMPLE_ROWS), params.dataset)


def register_stage(
    params: Params,
    model_dir: Path,
    preprocessor_path: Path,
    test_path: Path,
    evaluation_path: Path,
    gates_path: Path,
    run_ref_path: Path,
    output_path: Path,
    data_path: Path,
    project_root: Path,
    mitigation_path: Path | None = None,
) -> dict:
    """``mitigation_path``: evaluate's mitigation.json; when it is enabled there, the served
    model applies its per-group rule instead of the single threshold."""
    ref = tracking.RunRef.load(run_ref_path)

    def evaluated(path: Path, *required: str) -> dict:
        return read_stage_output(path, "evaluate", required=required, error=TrackingError)

    evaluation = evaluated(evaluation_path, "threshold")
    gates = evaluated(gates_path, "passed", "summary")
    mitigation = evaluated(mitigation_path, "enabled") if mitigation_path is not None else {"enabled": False}
    if mitigation["enabled"] and "rule" not in mitigation:
        raise TrackingError(f"{mitigation_path} is enabled but has no 'rule' key; rerun `dvc repro evaluate`")
    name, metric = params.registry.model_name, params.registry.primary_metric
    if metric not in evaluation:
        raise TrackingError(
            f"register.primary_metric {metric!r} is not in {evaluation_path}; "
            f"choose one of {sorted(k for k, v in evaluation.items() if isinstance(v, float))}"
        )

    with tempfile.TemporaryDirectory(prefix="fairtrain-serving-") as scratch:
        serving_path = Path(scratch) / "serving.json"
        write_json(
            serving_path,
            {
                "threshold": evaluation["threshold"],  # chosen on validation by evaluate
                "positive_class": params.dataset.positive_class,
                "negative_class": params.dataset.negative_class,
                "label": params.dataset.label,
                "mitigation": mitigation["rule"] if mitigation["enabled"] else None,
            },
        )
        artifacts = {
            MODEL_DIR: str(model_dir),
            PREPROCESSOR: str(preprocessor_path),
            SERVING: str(serving_path),
        }
        digest = reg.artifacts_digest(artifacts)
        with tracking.resume_run(ref, "register"):
            client = MlflowClient()
            version = reg.find_existing_version(client, name, ref.run_id, digest)
            if version is not None:
                log.info(
                    "run %s is already registered as %s v%s; reusing it", ref.run_id, name, version.version
                )
            else:
                info = reg.log_pyfunc_model(
                    artifacts,
                    input_example(pd.read_parquet(test_path), params),
                )
                tags = {
                    **lineage_tags(
                        params,
                        data_path,
                        ref.run_id,
                        project_root,
                        client.get_run(ref.run_id).data.tags,
                        model_dir,
                    ),
                    reg.ARTIFACTS_HASH_TAG: digest,
                }
                version = reg.register_version(client, name, info.model_uri, ref.run_id, tags)

            number = str(version.version)  # int or str depending on the MLflow call
            decision = promotion.decide_promotion(
                client,
                name,
                number,
                metric,
                evaluation[metric],
                gates["passed"],
                params.registry.promotion_margin,
                gates.get("champion_non_regression"),  # absent in old outputs: run metric fallback
            )
            client.set_registered_model_alias(name, promotion.CHALLENGER, number)
            decided = "passed" if gates["passed"] else "failed"
            client.set_model_version_tag(name, number, "gate_decision", decided)
            client.set_model_version_tag(name, number, "gate_summary", gates["summary"])
            # The alias moves only when the champion is another version (make_champion then
            # writes ``promotion`` with the reason, and ``promoted_at``).
            if decision.promote and decision.previous_champion != number:
                promotion.make_champion(client, name, number, decision.reason)
            elif "promotion" not in client.get_model_version(name, number).tags:
                client.set_model_version_tag(name, number, "promotion", decision.reason)
            else:
                # A rerun for a version decided before (same artifacts, e.g. after a margin
                # change): ``promotion`` keeps why its alias last moved ("forced past failed
                # gates" included) or its first verdict; this run's verdict goes beside it.
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                client.set_model_version_tag(name, number, LAST_CHECKED_TAG, f"{stamp}: {decision.reason}")
            aliases = client.get_model_version(name, number).aliases

    record = {
        "model_name": name,
        "version": number,
        "model_uri": f"models:/{name}/{number}",
        "aliases": sorted(aliases),
        "run_id": ref.run_id,
        "promoted": decision.promote,
        "promotion_reason": decision.reason,
        "previous_champion": decision.previous_champion,
        "gates_passed": gates["passed"],
        "mitigated": bool(mitigation["enabled"]),
    }
    write_json(output_path, record)
    log.info("%s v%s aliases %s; %s", name, number, record["aliases"], decision.reason)
    return record
