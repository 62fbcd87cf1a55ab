"""The served model: raw rows in, positive-class probability and label out.

Everything it loads is data, not code: weights from safetensors, architecture, serving
settings and preprocessing state from JSON. The model is logged "from code" (see
``model_code.py``), so loading it never unpickles a Python object.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException

from fairtrain.data.parsing import bin_labels
from fairtrain.data.preprocessing import Preprocessor
from fairtrain.errors import DataValidationError
from fairtrain.evaluation.decision_rule import apply_rule
from fairtrain.io import read_json
from fairtrain.models.export import load_model

# Names of the artifacts logged with the model (keys of ``context.artifacts``).
MODEL_DIR = "model"
PREPROCESSOR = "preprocessor"
SERVING = "serving"


def _rule_groups(rule: dict, column: pd.Series) -> np.ndarray:
    """The mitigation group of each request row: the stripped text, or, for a binned numeric
    sensitive feature, the label of the bin its value falls in (as prepare bins it)."""
    if "bins" not in rule:
        return column.astype(str).str.strip().to_numpy()
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    groups, _ = bin_labels(values, rule["bins"]["edges"], rule["bins"]["labels"])
    return groups.astype(str).to_numpy()


class FairtrainModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.load(context.artifacts)

    def load(self, artifacts: dict[str, str]) -> None:
        self.preprocessor = Preprocessor.from_dict(read_json(artifacts[PREPROCESSOR]))
        self.network = load_model(Path(artifacts[MODEL_DIR]))
        serving = read_json(artifacts[SERVING])
        self.threshold = float(serving["threshold"])
        self.classes = np.asarray([serving["negative_class"], serving["positive_class"]], dtype=object)
        # With evaluate.mitigation on: ThresholdOptimizer's per-group thresholds as JSON data
        # (see evaluation/mitigation.py), applied instead of the single threshold.
        self.mitigation = serving.get("mitigation")

    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        try:
            features = torch.from_numpy(self.preprocessor.transform(frame))
        except DataValidationError as error:
            # As an MLflow parameter error the scoring server answers 400 with this message
            # (naming the column) instead of a generic text and a server-side traceback.
            raise MlflowException.invalid_parameter_value(str(error)) from None
        probability = self.network.predict_proba(features).numpy().astype(np.float64)
        if self.mitigation is None:
            decision = (probability >= self.threshold).astype(int)
        else:
            feature = self.mitigation["sensitive_feature"]
            if feature not in frame.columns:
                raise MlflowException.invalid_parameter_value(
                    f"the mitigated model needs the sensitive column {feature!r} in every request"
                )
            groups = _rule_groups(self.mitigation, frame[feature])
            decision = apply_rule(self.mitigation, probability, groups)
        return pd.DataFrame({"probability": probability, "label": self.classes[decision]})
