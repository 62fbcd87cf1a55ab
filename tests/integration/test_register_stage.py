"""The register stage on a plainly trained model (no Ray, no evaluate): evaluate's outputs are
written by hand, so each test sets exactly the gate record it is about. Real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from fairtrain import tracking
from fairtrain.errors import TrackingError
from fairtrain.registry import promotion
from fairtrain.registry.lineage import DVC_MODEL_MD5_TAG, dvc_dir_md5, dvc_output_md5
from fairtrain.stages.register_stage import LAST_CHECKED_TAG, register_stage
from tests.integration.pipeline import train_plain

pytestmark = pytest.mark.slow
PASSED = {"passed": True, "summary": "all gates passed", "checks": []}


def _trained(params, prepared, out: Path) -> Path:
    """``out`` with a model trained for one epoch and a run reference, as train leaves them."""
    train_plain(params, prepared, out / "models/model", epochs=1)
    experiment_id = tracking.configure(params.tracking.experiment)
    with mlflow.start_run() as run:
        pass
    tracking.RunRef(run.info.run_id, experiment_id, tracking.resolve_tracking_uri()).save(
        out / "models/mlflow_run.json"
    )
    return out


def _register(params, prepared, out: Path, gates=PASSED, evaluation=None, write=True) -> dict:
    """register_stage with evaluate's files written from ``gates`` and ``evaluation`` (or, with
    ``write`` false, as they are)."""
    evaluation = {"threshold": 0.5, "roc_auc": 0.9} if evaluation is None else evaluation
    eval_dir = out / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    for name, payload in (("evaluation", evaluation), ("gates", gates), ("mitigation", {"enabled": False})):
        if write:
            (eval_dir / f"{name}.json").write_text(json.dumps(payload))
    return register_stage(
        params,
        out / "models/model",
        prepared["preprocessor"],
        prepared["test"],
        eval_dir / "evaluation.json",
        eval_dir / "gates.json",
        out / "models/mlflow_run.json",
        out / "models/registered.json",
        data_path=prepared["raw"],
        project_root=out,
        mitigation_path=eval_dir / "mitigation.json",
    )


def test_requirements_pin_public_versions(lenient, prepared, mlflow_store, tmp_path):
    # A local label (torch 2.x+cpu) is no release on PyPI: an environment built from the
    # model's requirements.txt could not be installed.
    out = _trained(lenient, prepared, tmp_path / "a")
    record = _register(lenient, prepared, out)
    requirements = Path(mlflow.artifacts.download_artifacts(f"{record['model_uri']}/requirements.txt"))
    pins = [line for line in requirements.read_text().splitlines() if "==" in line]
    assert any(line.startswith("torch==") for line in pins)
    assert not [line for line in pins if "+" in line], pins


def test_a_rerun_keeps_the_reason_the_alias_moved(lenient, prepared, mlflow_store, tmp_path):
    client, name = MlflowClient(), lenient.registry.model_name
    out = _trained(lenient, prepared, tmp_path / "a")
    failed = {"passed": False, "summary": "failed gates: roc_auc", "checks": []}
    first = _register(lenient, prepared, out, gates=failed)
    assert not first["promoted"]
    assert "gate failed" in client.get_model_version(name, "1").tags["promotion"]
    forced = "manual promotion (forced past failed gates)"  # as `fairtrain promote 1 --force` writes it
    promotion.make_champion(client, name, "1", forced)

    # Same artifacts (e.g. after a margin change): same version, judged again.
    again = _register(lenient, prepared, out, gates=failed)
    assert again["version"] == "1" and "remains champion" in again["promotion_reason"]
    tags = client.get_model_version(name, "1").tags
    assert tags["promotion"] == forced
    assert "remains champion" in tags[LAST_CHECKED_TAG]
    assert tags["gate_decision"] == "failed"


def test_a_new_decision_rule_on_the_champions_run_is_promoted(lenient, prepared, mlflow_store, tmp_path):
    # Another threshold → another serving.json → a new version of the same run and weights.
    client, name = MlflowClient(), lenient.registry.model_name
    out = _trained(lenient, prepared, tmp_path / "a")
    assert _register(lenient, prepared, out)["promoted"]
    # The run has no test_roc_auc: only "same run" explains a promotion at an equal metric.
    second = _register(lenient, prepared, out, evaluation={"threshold": 0.4, "roc_auc": 0.9})
    assert second["version"] == "2" and second["promoted"], second["promotion_reason"]
    assert "same training run as champion v1" in second["promotion_reason"]
    assert second["previous_champion"] == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"


def test_register_compares_with_the_champion_scored_on_this_split(lenient, prepared, mlflow_store, tmp_path):
    client, name = MlflowClient(), lenient.registry.model_name
    first = _trained(lenient, prepared, tmp_path / "a")
    _register(lenient, prepared, first)
    mlflow.MlflowClient().log_metric(client.get_model_version(name, "1").run_id, "test_roc_auc", 0.5)
    second = _trained(lenient, prepared, tmp_path / "b")

    def gates(version, score):
        nr = {"status": "compared", "metric": "roc_auc", "champion_version": version, "groups": []}
        return {**PASSED, "champion_non_regression": {**nr, "champion_overall": {"roc_auc": score}}}

    # The champion's run says 0.5 (its own split); rescored on this split it is 0.95.
    record = _register(lenient, prepared, second, gates=gates("1", 0.95))
    assert not record["promoted"] and "0.9500 on this test split" in record["promotion_reason"]
    # evaluate scored a champion that is no longer the champion.
    stale = _register(lenient, prepared, second, gates=gates("7", 0.5))
    assert not stale["promoted"] and "rerun evaluate" in stale["promotion_reason"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


def test_lineage_records_the_model_md5_from_dvc_lock(lenient, prepared, mlflow_store, tmp_path):
    client, name = MlflowClient(), lenient.registry.model_name
    out = _trained(lenient, prepared, tmp_path / "a")
    on_disk = dvc_dir_md5(out / "models/model")
    lock = {
        "schema": "2.0",
        "stages": {
            "train": {
                "cmd": "python pipelines/train.py",
                "outs": [
                    {"path": "metrics/train.json", "hash": "md5", "md5": "0" * 32, "size": 9},
                    {"path": "models/model", "hash": "md5", "md5": on_disk, "nfiles": 2},
                ],
            }
        },
    }
    (out / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert dvc_output_md5(out, out / "models/model") == on_disk
    _register(lenient, prepared, out)
    tags = client.get_model_version(name, "1").tags
    assert tags[DVC_MODEL_MD5_TAG] == on_disk
    assert "dvc_lock_sha256" not in tags  # a hash of the lock mid-`dvc repro` matched no commit

    # Outside dvc (no lock, or no entry for the model): no tag rather than a wrong one.
    other = _trained(lenient, prepared, tmp_path / "b")
    _register(lenient, prepared, other)
    assert DVC_MODEL_MD5_TAG not in client.get_model_version(name, "2").tags
    # A lock from before the model was retrained by hand names another model: no tag either.
    lock["stages"]["train"]["outs"][1]["md5"] = "ab" * 16 + ".dir"
    (other / "dvc.lock").write_text(yaml.safe_dump(lock))
    _register(lenient, prepared, other)
    assert DVC_MODEL_MD5_TAG not in client.get_model_version(name, "2").tags
    (other / "dvc.lock").write_text("stages: {train: {outs: [{path: models/other, md5: x}]}}\n")
    assert dvc_output_md5(other, other / "models/model") is None
    (other / "dvc.lock").write_text(": not yaml [")
    assert dvc_output_md5(other, other / "models/model") is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("gates", "{not json", r"gates\.json cannot be read as JSON"),
        ("gates", '{"summary": "x"}', r"gates\.json has no 'passed' key"),
        ("evaluation", "[1, 2]", r"evaluation\.json holds a list"),
        ("evaluation", None, r"evaluation\.json does not exist"),
    ],
)
def test_bad_input_files_name_the_file_key_and_stage(
    lenient, prepared, mlflow_store, tmp_path, name, content, message
):
    out = tmp_path / "a"
    tracking.RunRef("0" * 32, "0", mlflow_store).save(out / "models/mlflow_run.json")
    (out / "eval").mkdir(parents=True)
    (out / "eval/gates.json").write_text(json.dumps(PASSED))
    (out / "eval/evaluation.json").write_text(json.dumps({"threshold": 0.5, "roc_auc": 0.9}))
    (out / "eval/mitigation.json").write_text(json.dumps({"enabled": False}))
    path = out / f"eval/{name}.json"
    path.unlink()
    if content is not None:
        path.write_text(content)
    with pytest.raises(TrackingError, match=message) as error:
        _register(lenient, prepared, out, write=False)
    assert "dvc repro evaluate" in str(error.value)
