"""What a Ray Train worker process imports before it can train: every worker is a fresh
process, and each module it imports adds to the training's fixed start-up overhead."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import PROJECT_ROOT


def test_the_worker_module_does_not_import_the_tracking_client():
    # Only rank 0 of a training with a run logs to MLflow, and imports it when it first does;
    # importing mlflow up front cost every worker about 1 s of CPU (see docs, "Speed").
    probe = (
        "import sys, fairtrain.training.worker; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "[]", f"importing fairtrain.training.worker imported {found}"
