"""Log the pyfunc model, register a version, and move the aliases.

``challenger`` always points at the newest version; ``champion`` moves only when every gate
passed and the version beats the current champion's primary test metric by more than the
margin. Registering the same run with the same artifacts again reuses its version instead of
creating a duplicate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema

import fairtrain
from fairtrain.io import file_sha256, json_sha256
from fairtrain.registry import model_code
from fairtrain.registry.pyfunc_model import FairtrainModel

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
ARTIFACTS_HASH_TAG = "artifacts_sha256"
SERVING_PACKAGES = ("torch", "safetensors", "pandas", "numpy", "pyarrow", "pydantic", "pyyaml", "mlflow")


def serving_requirements() -> list[str]:
    """Exact versions of what the served model imports, taken from this environment."""
    return [f"{name}=={metadata.version(name)}" for name in SERVING_PACKAGES]


def artifacts_digest(artifacts: dict[str, str]) -> str:
    """Content hash of every file the model loads and of the packaged ``fairtrain`` code, to
    recognise a re-registration of the same thing."""
    package = Path(fairtrain.__file__).parent
    digests: dict[str, dict[str, str]] = {
        "code": {str(p.relative_to(package)): file_sha256(p) for p in sorted(package.rglob("*.py"))}
    }
    for key, location in sorted(artifacts.items()):
        path = Path(location)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        digests[key] = {p.name: file_sha256(p) for p in files}
    return json_sha256(digests)


def raw_rows_signature(
    input_example: pd.DataFrame, output: pd.DataFrame, numeric: list[str]
) -> ModelSignature:
    """Every feature column is required; categoricals must be strings. Numeric columns accept
    any type because MLflow will not turn int64 (what a CSV or JSON integer becomes) into
    double; the preprocessor coerces them and names the column when a value is not a number."""
    inferred = infer_signature(input_example, output)
    inputs = [
        ColSpec(AnyType(), spec.name) if spec.name in numeric else spec for spec in inferred.inputs.inputs
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=inferred.outputs)


def log_pyfunc_model(artifacts: dict[str, str], input_example: pd.DataFrame, numeric: list[str]) -> ModelInfo:
    """Log the model into the active run, with a signature taken from real raw rows."""
    local = FairtrainModel()
    local.load(artifacts)
    signature = raw_rows_signature(input_example, local.predict(None, input_example), numeric)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=model_code.__file__,
        artifacts=artifacts,
        code_paths=[str(Path(fairtrain.__file__).parent)],
        signature=signature,
        input_example=input_example,
        pip_requirements=serving_requirements(),
    )


def find_existing_version(client: MlflowClient, name: str, run_id: str, digest: str) -> ModelVersion | None:
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    for version in versions:
        if version.tags.get(ARTIFACTS_HASH_TAG) == digest:
            return version
    return None


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    previous_champion: str | None


def decide_promotion(
    client: MlflowClient,
    name: str,
    version: str,
    metric: str,
    value: float | None,
    gates_passed: bool,
    margin: float,
) -> PromotionDecision:
    champion = version_by_alias(client, name, CHAMPION)
    # MLflow returns versions as int from some calls and str from others: compare as str.
    previous = str(champion.version) if champion else None
    if not gates_passed:
        return PromotionDecision(False, "not promoted: at least one gate failed", previous)
    if value is None:
        return PromotionDecision(False, f"not promoted: test {metric} is undefined", previous)
    if champion is None:
        return PromotionDecision(True, "promoted: gates passed and there was no champion", previous)
    if previous == str(version):
        return PromotionDecision(True, "already the champion", previous)
    best = client.get_run(champion.run_id).data.metrics.get(f"test_{metric}")
    if best is None:
        return PromotionDecision(True, f"promoted: champion v{previous} has no test_{metric}", previous)
    if value > best + margin:
        return PromotionDecision(
            True,
            f"promoted: test {metric} {value:.4f} beats champion v{previous} ({best:.4f}) "
            f"by more than {margin}",
            previous,
        )
    return PromotionDecision(
        False,
        f"not promoted: test {metric} {value:.4f} does not beat champion v{previous} "
        f"({best:.4f}) by more than {margin}",
        previous,
    )


def register_version(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    version = mlflow.register_model(model_uri, name, tags=tags)
    log.info("registered %s version %s from run %s", name, version.version, run_id)
    return version
