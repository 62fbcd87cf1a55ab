"""Tags that lead from a registered model version back to its exact inputs."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from fairtrain.config import Params
from fairtrain.io import file_sha256, json_sha256
from fairtrain.training.tags import LIGHTNING_TAG

# Both Lightning distributions: which one training imported is the run's LIGHTNING_TAG.
TRACKED_PACKAGES = ("torch", "pytorch-lightning", "lightning", "ray", "mlflow", "dvc", "fairlearn", "captum")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


# Files `dvc repro` itself rewrites while the pipeline runs: changes there say nothing about
# whether the code and params that produced the model match the commit.
PIPELINE_OUTPUTS = ("dvc.lock", "metrics", "plots", "reports")


def git_state(cwd: Path) -> dict[str, str]:
    """Commit, and whether tracked files other than the pipeline's own outputs differ from it."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    excluded = [f":!{path}" for path in PIPELINE_OUTPUTS]
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded, cwd=cwd)
    return {"git_commit": commit, "git_dirty": str(bool(status)).lower()}


def lineage_tags(
    params: Params, data_path: Path, run_id: str, project_root: Path, run_tags: dict[str, str]
) -> dict[str, str]:
    """``run_tags``: the training run's tags, where rank 0 recorded what it trained with."""
    tags = {
        **git_state(project_root),
        "data_path": str(data_path),
        "data_sha256": file_sha256(data_path),
        "params_sha256": json_sha256(params.model_dump(mode="json")),
        "mlflow_run_id": run_id,
        "ray_num_workers": str(params.train.num_workers),
        "python": platform.python_version(),
        # "unknown" for runs trained before rank 0 recorded it
        "lightning_package": run_tags.get(LIGHTNING_TAG, "unknown"),
    }
    dvc_lock = project_root / "dvc.lock"
    if dvc_lock.exists():
        tags["dvc_lock_sha256"] = file_sha256(dvc_lock)
    for package in TRACKED_PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags
