"""Shared entry-point behaviour for stage scripts: logging, clean errors, exit codes."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable

from fairtrain.errors import FairtrainError


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    # `dvc repro` stops a stage with SIGTERM; turning it into KeyboardInterrupt lets
    # context managers run, so an open MLflow run is closed instead of left RUNNING.
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def run_stage(name: str, body: Callable[[], object]) -> None:
    """Run a stage body; a ``FairtrainError`` prints its message (no traceback) and exits 1."""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    log = logging.getLogger(f"fairtrain.{name}")
    started = time.perf_counter()
    try:
        body()
    except FairtrainError as error:
        print(f"fairtrain {name}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"fairtrain {name}: interrupted", file=sys.stderr)
        sys.exit(130)
    log.info("done in %.1fs", time.perf_counter() - started)
