"""The evaluate stage replaces its ~20 local outputs together: a failure while writing them
leaves the previous run's outputs, all of one run, untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairtrain.stages.evaluate_stage import evaluate_stage
from tests.helpers import shrink_params
from tests.integration.pipeline import run_after_training

pytestmark = pytest.mark.slow


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failure_while_writing_the_outputs_leaves_the_previous_ones(
    lenient, prepared, mlflow_store, tmp_path, monkeypatch
):
    first = run_after_training(lenient, prepared, tmp_path, epochs=1)
    before = _snapshot(tmp_path / "eval")

    def evaluate(params):
        inputs = [prepared[name] for name in ("train", "val", "test", "preprocessor")]
        model = [tmp_path / "models/model", tmp_path / "models/mlflow_run.json"]
        return evaluate_stage(params, *inputs, *model, first["outputs"])

    assert len(before) > 15 and any(name.startswith("figures/") for name in before)

    # Another threshold rule changes most outputs; the disk "fills up" at calibration.json,
    # one of the last files written.
    other = shrink_params(lenient, evaluate={"threshold_rule": "max_f1"})
    write_text = Path.write_text
    failed = []

    def full_at_calibration(self, *args, **kwargs):
        if "calibration" in self.name and self.parent == tmp_path / "eval":
            failed.append(self.name)
            raise OSError(28, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_at_calibration)
    with pytest.raises(OSError, match="No space left"):
        evaluate(other)
    assert failed, "the failure came while the outputs were being written"
    assert _snapshot(tmp_path / "eval") == before, "no output replaced, no staging file left"

    monkeypatch.setattr(Path, "write_text", write_text)
    evaluate(other)
    after = _snapshot(tmp_path / "eval")
    assert after.keys() == before.keys()
    assert after["evaluation.json"] != before["evaluation.json"], "the rerun did replace them"
