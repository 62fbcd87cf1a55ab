"""Start or join Ray: a local instance by default, an existing cluster via ``RAY_ADDRESS``."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from fairtrain.errors import TrainingError

log = logging.getLogger(__name__)


@contextmanager
def ray_session() -> Iterator[None]:
    """Connect for the duration of the block and disconnect after.

    With ``RAY_ADDRESS`` set (a ``ray start`` head, a KubeRay cluster) Ray joins that cluster
    and no code changes; otherwise a local instance is started with this machine's CPUs and
    shut down afterwards. A session that is already connected (tests, notebooks) is reused
    and left running.
    """
    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining Ray cluster at %s", address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as error:
            raise TrainingError(
                f"cannot join the Ray cluster at RAY_ADDRESS={address}: {str(error).splitlines()[0]}\n"
                "Clusters started with `ray start` use token authentication: set RAY_AUTH_MODE=token "
                "and provide the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token. "
                "Unset RAY_ADDRESS to train on a local Ray instance instead."
            ) from error
    else:
        log.info("starting a local Ray instance")
        stop_handler = signal.getsignal(signal.SIGTERM)
        # The dashboard (loopback only) also serves the state API that Ray Train uses to
        # clean up after its controller; without it Ray logs a warning every few seconds.
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1", logging_level=logging.WARNING)
        # ray.init replaces the SIGTERM handler; put back the stage's own (it ends the MLflow
        # run and, through this context manager, shuts Ray down).
        signal.signal(signal.SIGTERM, stop_handler)
    try:
        yield
    finally:
        ray.shutdown()
