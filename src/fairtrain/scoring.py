"""Scoring rows with a logged or registered model in a child Python, with its own code.

MLflow puts a model's packaged ``fairtrain`` code first on ``sys.path`` before the model's
code imports it, as when the model is served. In a process where ``fairtrain`` is already
imported (the evaluate stage, the ``fairtrain`` CLI) that does not happen: the checkout's code
would score the model instead, and a model whose code changed since it was registered
(another layout of its weights, another decision rule) would fail to load or score
differently from `mlflow models serve`. A fresh interpreter scores it as serving does, at the
cost of its start-up (about 3.5 s: Python, MLflow and torch).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

_SCORE_SCRIPT = """
import sys
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(pd.read_parquet(sys.argv[2])).to_parquet(sys.argv[3])
"""


def score_with_its_own_code(model_uri: str, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` scored by the model at ``model_uri`` (``models:/name/3``, ``runs:/...``, a
    folder) in a child Python; returns the model's prediction frame. Raises RuntimeError with
    the child's last error line when loading or scoring fails."""
    with tempfile.TemporaryDirectory(prefix="fairtrain-score-") as scratch:
        rows_path, scored_path = Path(scratch, "rows.parquet"), Path(scratch, "scored.parquet")
        rows.to_parquet(rows_path, index=False)
        # The store and registry this process uses (set in code or by the environment).
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri(),
        }
        done = subprocess.run(
            [sys.executable, "-c", _SCORE_SCRIPT, model_uri, str(rows_path), str(scored_path)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"the scoring process exited with {done.returncode}")
        return pd.read_parquet(scored_path)
