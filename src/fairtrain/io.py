"""File helpers shared by the stages: atomic writes and content hashes.

Every output is written to a temporary file beside its target and renamed into place, so a
stage that fails half-way never leaves a truncated file that a later stage could mistake for
a result.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_text(payload: Any) -> str:
    """Strict JSON: NaN and infinities (undefined metrics) are written as null."""
    return json.dumps(json_safe(payload), indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(payload))


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_sha256(payload: Any) -> str:
    """Hash of a JSON-serialisable value, independent of key order."""
    canonical = json.dumps(json_safe(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def json_safe(value: Any) -> Any:
    """numpy scalars/arrays → Python values; NaN and ±inf → None (JSON has neither)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``target`` as a whole, so readers
    see either the old complete folder or the new complete folder, never a mix."""

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp creates 0700 folders
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class StagedOutputs:
    """Staging paths handed out by :func:`replaced_together`."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack

    def file(self, target: str | Path) -> Path:
        """A temporary file beside ``target``, renamed onto it when the block completes."""
        return self._stack.enter_context(atomic_path(target))

    def folder(self, target: str | Path) -> Path:
        """An empty staging folder that replaces ``target`` as a whole when the block completes."""
        return self._stack.enter_context(atomic_directory(target))


@contextmanager
def replaced_together() -> Iterator[StagedOutputs]:
    """Stage several outputs and put them all in place only when the block completes.

    A stage whose outputs are read side by side (splits and their statistics; metrics and the
    figures drawn from them) must not leave new ones beside old ones: an exception in the
    block (a full disk at the last file) replaces none of them, and removes the staged files.
    """
    with ExitStack() as stack:
        yield StagedOutputs(stack)


def read_stage_output(
    path: str | Path,
    writer: str,
    what: str | None = None,
    required: tuple[str, ...] = (),
    error: type[Exception] = ValueError,
) -> dict:
    """The JSON object the ``writer`` stage left at ``path``, with the ``required`` keys.

    Anything else (a missing, unreadable or malformed file, a JSON value that is not an
    object, a missing key) raises ``error`` naming the file (``what`` says which input it is)
    and the stage to rerun, instead of json's or a KeyError's traceback."""
    label = f"{path} (the {what} input)" if what else str(path)
    rerun = f"it is written by the {writer} stage: rerun `dvc repro {writer}`"
    try:
        payload = read_json(path)
    except FileNotFoundError:
        raise error(f"{label} does not exist; {rerun}") from None
    except json.JSONDecodeError as problem:
        raise error(
            f"{label} cannot be read as JSON: it is not valid JSON ({problem.msg} at line "
            f"{problem.lineno} column {problem.colno}); {rerun}"
        ) from None
    except (OSError, ValueError) as problem:  # ValueError: not UTF-8
        raise error(f"{label} cannot be read ({problem}); {rerun}") from None
    if not isinstance(payload, dict):
        raise error(f"{label} holds a {type(payload).__name__}, not an object; {rerun}")
    missing = [key for key in required if key not in payload]
    if missing:
        raise error(f"{label} has no {', '.join(map(repr, missing))} key; {rerun}")
    return payload
