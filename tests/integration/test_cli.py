"""The `fairtrain` console script against a real MLflow registry with two versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.pipeline import run_after_training

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).parent / "fairtrain")


def fairtrain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "--model-name", "fairtrain-adult", *args],
        cwd=cwd,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _version_tag(name: str, version: str, key: str) -> str | None:
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_model_version(name, version).tags.get(key)


@pytest.fixture
def registry(lenient, prepared, mlflow_store, tmp_path):
    """v1 trained (gates pass → champion), v2 untrained (challenger, gates fail)."""
    run_after_training(lenient, prepared, tmp_path / "a", epochs=3)
    run_after_training(lenient, prepared, tmp_path / "b", epochs=0)
    return tmp_path


def test_champion_versions_and_compare(registry):
    champion = fairtrain("champion", "--json", cwd=registry)
    assert champion.returncode == 0, champion.stderr
    info = json.loads(champion.stdout)
    assert info["version"] == "1" and "champion" in info["aliases"]
    lineage = set(info["lineage"])
    named = {"git_commit", "data_sha256", "params_sha256", "mlflow_run_id", "python", "lightning_package"}
    assert named <= lineage
    # The library versions the README lists as lineage are shown too.
    assert {"version.torch", "version.ray", "version.mlflow"} <= lineage
    assert 0.8 < info["test_metrics"]["roc_auc"] <= 1

    versions = json.loads(fairtrain("versions", "--json", cwd=registry).stdout)
    assert [(v["version"], v["aliases"]) for v in versions] == [("1", ["champion"]), ("2", ["challenger"])]

    compared = fairtrain("compare", "@champion", "2", "--json", cwd=registry)
    rows = {r["metric"]: r for r in json.loads(compared.stdout)["metrics"]}
    auc = rows["test_roc_auc"]
    assert auc["a"] == info["test_metrics"]["roc_auc"]
    assert auc["b_minus_a"] == pytest.approx(auc["b"] - auc["a"])
    assert "fairness/sex/demographic_parity_difference" in rows
    plain = fairtrain("compare", "1", "2", cwd=registry)
    assert plain.returncode == 0, plain.stderr
    line = next(line for line in plain.stdout.splitlines() if line.startswith("test_roc_auc "))
    assert line.split()[1:] == [f"{auc['a']:.4f}", f"{auc['b']:.4f}", f"{auc['b_minus_a']:.4f}"]
    # The difference column says what is subtracted from what, in the arguments' own terms.
    assert plain.stdout.splitlines()[0].split() == ["metric", "v1", "v2", "2", "-", "1"]
    swapped = fairtrain("compare", "2", "@champion", cwd=registry).stdout.splitlines()
    assert swapped[0].split() == ["metric", "v2", "v1", "@champion", "-", "2"]
    line = next(line for line in swapped if line.startswith("test_roc_auc "))
    assert line.split()[-1] == f"{-auc['b_minus_a']:.4f}"


def test_promote_refuses_failed_gates_then_force_and_rollback(registry):
    refused = fairtrain("promote", "2", cwd=registry)
    assert refused.returncode == 1
    assert "did not pass its gates" in refused.stderr and "--force" in refused.stderr

    forced = fairtrain("promote", "2", "--force", "--json", cwd=registry)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout) == {"champion": "2", "previous_champion": "1", "action": "promote"}
    assert _version_tag("fairtrain-adult", "2", "promotion") == "manual promotion (forced past failed gates)"

    back = fairtrain("promote", "--rollback", "--json", cwd=registry)
    assert json.loads(back.stdout) == {"champion": "1", "previous_champion": "2", "action": "rollback"}
    versions = json.loads(fairtrain("versions", "--json", cwd=registry).stdout)
    assert dict((v["version"], v["aliases"]) for v in versions) == {
        "1": ["champion"],
        "2": ["challenger", "previous-champion"],
    }


def test_rollback_to_a_version_that_failed_its_gates_needs_force_as_promote_does(registry):
    """v2 failed its gates, was forced to champion, then rolled back from: it sits at
    previous-champion, and a second rollback would make it champion again unnoticed."""
    assert fairtrain("promote", "2", "--force", cwd=registry).returncode == 0
    assert fairtrain("promote", "--rollback", cwd=registry).returncode == 0  # to v1: gates passed

    refused = fairtrain("promote", "--rollback", cwd=registry)
    assert refused.returncode == 1 and refused.stdout == "" and "Traceback" not in refused.stderr
    assert "fairtrain-adult v2 did not pass its gates (" in refused.stderr
    assert "use --force to roll back to it anyway" in refused.stderr
    unchanged = json.loads(fairtrain("versions", "--json", cwd=registry).stdout)
    assert dict((v["version"], v["aliases"]) for v in unchanged) == {
        "1": ["champion"],
        "2": ["challenger", "previous-champion"],
    }

    forced = fairtrain("promote", "--rollback", "--force", "--json", cwd=registry)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout) == {"champion": "2", "previous_champion": "1", "action": "rollback"}
    assert _version_tag("fairtrain-adult", "2", "promotion") == "rollback from v1 (forced past failed gates)"


def test_promote_lists_what_exists_and_says_when_nothing_changes(registry):
    for wrong in ("99", "abc", "0", "-1"):
        unknown = fairtrain("promote", wrong, cwd=registry)
        assert unknown.returncode == 1 and "Traceback" not in unknown.stderr, unknown.stderr
        assert (
            f"model 'fairtrain-adult' has no version or alias '{wrong}'; it has versions 1-2 and "
            "aliases champion (v1), challenger (v2)"
        ) in unknown.stderr

    same = fairtrain("promote", "1", cwd=registry)
    assert same.returncode == 0, same.stderr
    assert same.stdout.strip() == "fairtrain-adult: v1 is already champion; nothing changed"
    also = fairtrain("--json", "promote", "@champion", cwd=registry)  # --json before the command too
    assert json.loads(also.stdout) == {"champion": "1", "previous_champion": None, "action": "none"}
    versions = json.loads(fairtrain("versions", "--json", cwd=registry).stdout)
    assert dict((v["version"], v["aliases"]) for v in versions) == {"1": ["champion"], "2": ["challenger"]}


def test_predict_scores_a_raw_csv_and_errors_are_clear(registry, adult_raw):
    rows = adult_raw.drop(columns=["income-per-year"]).head(25)
    rows.to_csv(registry / "rows.csv", index=False)
    done = fairtrain("predict", "rows.csv", "--output", "scored.csv", cwd=registry)
    assert done.returncode == 0, done.stderr
    # @champion (v1 here) is pinned to its version once: the signature checked is the scored one's.
    assert "25 rows scored by models:/fairtrain-adult/1 → scored.csv" in done.stderr
    scored = pd.read_csv(registry / "scored.csv")
    assert len(scored) == 25
    assert list(scored.columns[-2:]) == ["probability", "label"]
    assert scored["probability"].between(0, 1).all()
    # --json prints the predictions and still writes the file --output names.
    both = fairtrain("predict", "rows.csv", "--json", "--output", "both.csv", cwd=registry)
    assert both.returncode == 0, both.stderr
    printed = pd.DataFrame(json.loads(both.stdout))
    written = pd.read_csv(registry / "both.csv")
    assert len(printed) == len(written) == 25
    assert written["probability"].to_numpy() == pytest.approx(printed["probability"].to_numpy())

    rows.drop(columns=["age"]).to_csv(registry / "bad.csv", index=False)
    bad = fairtrain("predict", "bad.csv", cwd=registry)
    assert bad.returncode == 1 and "age" in bad.stderr
    # Checked against the registered signature; fnlwgt, in the rows but not used, is no error.
    assert "bad.csv: missing column(s) ['age'] that the model needs; it expects: age, workclass" in bad.stderr
    assert "extra" not in bad.stderr and "fnlwgt" not in bad.stderr

    absent = fairtrain("predict", "rows.csv", "--model", "models:/fairtrain-adult/99", cwd=registry)
    assert absent.returncode == 1 and "could not score" not in absent.stderr  # it never loaded
    assert (
        "models:/fairtrain-adult/99: model 'fairtrain-adult' has no version 99; it has versions 1-2 "
        "and aliases champion (v1), challenger (v2)"
    ) in absent.stderr

    unknown = fairtrain("compare", "1", "9", cwd=registry)
    assert unknown.returncode == 1 and "no version or alias '9'" in unknown.stderr
    for wrong in (["promote"], ["promote", "1", "--rollback"]):  # bad usage: exit 2, as documented
        usage = fairtrain(*wrong, cwd=registry)
        assert usage.returncode == 2 and "--rollback" in usage.stderr.splitlines()[-1]
        assert usage.stderr.startswith("usage: fairtrain promote"), usage.stderr
    assert fairtrain("no-such-command", cwd=registry).returncode == 2
