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

# Exit status of the child when the model refused the rows; its message is in argv[4].
_ROWS_REFUSED = 3
_SCORE_SCRIPT = f"""
import sys
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
model = mlflow.pyfunc.load_model(sys.argv[1])
try:
    scored = model.predict(pd.read_parquet(sys.argv[2]))
except MlflowException as error:
    if error.error_code != "INVALID_PARAMETER_VALUE":
        raise
    with open(sys.argv[4], "w", encoding="utf-8") as handle:
        handle.write(error.message)
    sys.exit({_ROWS_REFUSED})
scored.to_parquet(sys.argv[3])
"""


class RowsRefused(RuntimeError):
    """The model loaded but refused the rows (MLflow's INVALID_PARAMETER_VALUE: a column it
    needs is missing, a value does not fit). The message is the model's whole message: the last
    line of the child's traceback cuts a message that spans lines (MLflow's schema errors
    print the rows) and starts with the exception's class name."""


def score_with_its_own_code(model_uri: str, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` scored by the model at ``model_uri`` (``models:/name/3``, ``runs:/...``, a
    folder) in a child Python; returns the model's prediction frame. Raises RowsRefused when
    the model refused the rows, else RuntimeError with the child's last error line when loading
    or scoring fails."""
    with tempfile.TemporaryDirectory(prefix="fairtrain-score-") as scratch:
        rows_path, scored_path = Path(scratch, "rows.parquet"), Path(scratch, "scored.parquet")
        refusal_path = Path(scratch, "refused.txt")
        paths = [str(path) for path in (rows_path, scored_path, refusal_path)]
        rows.to_parquet(rows_path, index=False)
        # The store and registry this process uses (set in code or by the environment).
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri(),
        }
        done = subprocess.run(
            [sys.executable, "-c", _SCORE_SCRIPT, model_uri, *paths],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == _ROWS_REFUSED and refusal_path.is_file():
            raise RowsRefused(refusal_path.read_text(encoding="utf-8"))
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"the scoring process exited with {done.returncode}")
        return pd.read_parquet(scored_path)
