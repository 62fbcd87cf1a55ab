"""Log the pyfunc model and register a version (aliases are ``promotion.py``'s business).

Registering the same run with the same artifacts and code again reuses its version instead
of creating a duplicate.
"""

from __future__ import annotations

import logging
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
from packaging.version import Version

import fairtrain
from fairtrain.io import file_sha256, json_sha256
from fairtrain.registry.pyfunc_model import FairtrainModel

log = logging.getLogger(__name__)

ARTIFACTS_HASH_TAG = "artifacts_sha256"
# Executed by MLflow when the model loads; importing it here would run its set_model().
MODEL_CODE = Path(__file__).with_name("model_code.py")
SERVING_PACKAGES = ("torch", "safetensors", "pandas", "numpy", "pyarrow", "pydantic", "pyyaml", "mlflow")


def serving_requirements() -> list[str]:
    """Exact versions of what the served model imports, taken from this environment.

    Pinned by public version: a local label (``torch==2.5.1+cpu``, the CPU wheel's index) names
    no release on PyPI, so an environment built from the model's requirements (``mlflow models
    serve`` with a virtualenv, ``build-docker``) could not install it.
    """
    return [f"{name}=={Version(metadata.version(name)).public}" for name in SERVING_PACKAGES]


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


def raw_rows_signature(input_example: pd.DataFrame, output: pd.DataFrame) -> ModelSignature:
    """Every feature column is required, of any type. MLflow's type checks would reject what
    users really send: it will not turn int64 (a CSV or JSON integer) into double, nor a
    number-like category code into a string. The preprocessor coerces each column to its
    declared kind and names the column when a value does not fit."""
    inferred = infer_signature(input_example, output)
    inputs = [ColSpec(AnyType(), spec.name) for spec in inferred.inputs.inputs]
    return ModelSignature(inputs=Schema(inputs), outputs=inferred.outputs)


def log_pyfunc_model(artifacts: dict[str, str], input_example: pd.DataFrame) -> ModelInfo:
    """Log the model into the active run, with a signature taken from real raw rows."""
    local = FairtrainModel()
    local.load(artifacts)
    signature = raw_rows_signature(input_example, local.predict(None, input_example))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(MODEL_CODE),
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


def register_version(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    version = mlflow.register_model(model_uri, name, tags=tags)
    log.info("registered %s version %s from run %s", name, version.version, run_id)
    return version
