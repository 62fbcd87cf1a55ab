"""Tags that lead from a registered model version back to its exact inputs."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import yaml

from fairtrain.config import Params
from fairtrain.io import file_sha256, json_sha256
from fairtrain.training.tags import LIGHTNING_TAG

log = logging.getLogger(__name__)
# The md5 DVC recorded in dvc.lock for the model directory the version packages: the string
# that finds, with `git log -S <md5> -- dvc.lock`, the commit holding this version's outputs.
DVC_MODEL_MD5_TAG = "dvc_model_md5"

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
# What `dvc repro` itself rewrites in git-tracked files (models/registered.json among them).
PIPELINE_OUTPUTS = ("dvc.lock", "metrics", "plots", "reports", "models")


def git_state(cwd: Path) -> dict[str, str]:
    """Commit, and whether tracked files other than the pipeline's own outputs differ from it."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    excluded = [f":!{path}" for path in PIPELINE_OUTPUTS]
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded, cwd=cwd)
    return {"git_commit": commit, "git_dirty": str(bool(status)).lower()}


def dvc_output_md5(project_root: Path, output: Path) -> str | None:
    """The md5 ``dvc.lock`` records for ``output`` (a stage's out, e.g. ``models/model``).

    ``dvc repro`` writes a stage's lock entry as soon as that stage finishes (``dvc/repo/
    reproduce.py``: ``_reproduce_stage`` dumps it before the next stage starts), so while
    register runs the train stage's entry is final, unlike the file as a whole (register's
    and report's entries are still to come): that md5 is what the commit of this pipeline run
    holds. None when the lock is absent, unreadable, or does not list ``output``; a lock
    written before the output changed (register run by hand after a training outside DVC) is
    caught by comparing with ``dvc_dir_md5`` of the folder.
    """
    lock = project_root / "dvc.lock"
    try:
        relative = Path(output).resolve().relative_to(project_root.resolve()).as_posix()
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {}
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return None
    for stage in stages.values() if isinstance(stages, dict) else ():
        for out in (stage or {}).get("outs") or ():
            if isinstance(out, dict) and str(out.get("path", "")).rstrip("/") == relative and out.get("md5"):
                return str(out["md5"])
    return None


def dvc_dir_md5(folder: Path) -> str:
    """The md5 DVC 3 gives a folder output (``<md5>.dir``): the md5 of the JSON list of its
    files' md5s and relative paths, sorted by path (``dvc_data``'s ``Tree.digest``)."""
    entries = sorted(
        (
            {"md5": hashlib.md5(path.read_bytes()).hexdigest(), "relpath": relative.as_posix()}
            for path in folder.rglob("*")
            if path.is_file() and (relative := path.relative_to(folder))
        ),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def lineage_tags(
    params: Params,
    data_path: Path,
    run_id: str,
    project_root: Path,
    run_tags: dict[str, str],
    model_dir: Path | None = None,
) -> dict[str, str]:
    """``run_tags``: the training run's tags, where rank 0 recorded what it trained with;
    ``model_dir``: the model directory registered, looked up in ``dvc.lock``."""
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
    model_md5 = dvc_output_md5(project_root, model_dir) if model_dir is not None else None
    if model_md5 is None:
        log.info("dvc.lock lists no md5 for %s (run outside dvc?): no %s tag", model_dir, DVC_MODEL_MD5_TAG)
    elif model_dir is not None and dvc_dir_md5(Path(model_dir)) != model_md5:
        # Trained outside `dvc repro` since the lock was written (register run by hand): the
        # lock names the previous model, and no commit holds this one.
        log.warning("%s is not the model dvc.lock records: no %s tag", model_dir, DVC_MODEL_MD5_TAG)
    else:
        tags[DVC_MODEL_MD5_TAG] = model_md5
    for package in TRACKED_PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags
