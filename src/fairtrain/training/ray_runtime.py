"""Start or join Ray: a local instance by default, an existing cluster via ``RAY_ADDRESS``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from fairtrain.errors import TrainingError

log = logging.getLogger(__name__)

# How long the pre-check waits for a cluster's head to accept a connection. Ray itself keeps
# retrying an unreachable head for over a minute before it gives up.
CONNECT_TIMEOUT_S = 5.0


def _head_endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address; None for the forms
    Ray resolves itself (``auto``, ``local``, other schemes) or that cannot be parsed here."""
    target = address.removeprefix("ray://")
    if "://" in target:  # http:// (a dashboard, for Ray Jobs) and others: Ray's own message
        return None
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def unreachable_reason(address: str) -> str | None:
    """Why nothing answers at ``address`` (a refused or timed-out TCP connection), or None
    when its head accepts connections or the address is one Ray resolves itself."""
    endpoint = _head_endpoint(address)
    if endpoint is None:
        return None
    try:
        with socket.create_connection(endpoint, timeout=CONNECT_TIMEOUT_S):
            return None
    except socket.gaierror as error:
        return f"cannot resolve the host {endpoint[0]!r} ({error.strerror or error})"
    except OSError as error:
        return f"nothing accepts connections at {endpoint[0]}:{endpoint[1]} ({error.strerror or error})"


@contextmanager
def _stage_sigterm_handler_kept() -> Iterator[None]:
    """``ray.init`` replaces the SIGTERM handler with ``sys.exit``, whether it starts a local
    instance or joins a cluster. Put back the stage's own (it turns SIGTERM into an interrupt,
    so the MLflow run ends KILLED, not FAILED, and this module shuts Ray down)."""
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if main_thread and handler is not None:
            signal.signal(signal.SIGTERM, handler)


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
    with _stage_sigterm_handler_kept():
        if address:
            log.info("joining Ray cluster at %s", address)
            try:
                reason = unreachable_reason(address)
                if reason:
                    raise ConnectionError(reason)
                ray.init(address=address, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise TrainingError(
                    f"cannot join the Ray cluster at RAY_ADDRESS={address}: {str(error).splitlines()[0]}\n"
                    "Check that the cluster is up (`ray status` on its head) and that this is its GCS "
                    "address (host:port, by default port 6379). "
                    "Clusters started with `ray start` use token authentication: set RAY_AUTH_MODE=token "
                    "and provide the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token. "
                    "Unset RAY_ADDRESS to train on a local Ray instance instead."
                ) from error
        else:
            log.info("starting a local Ray instance")
            # The dashboard (loopback only) also serves the state API that Ray Train uses to
            # clean up after its controller; without it Ray logs a warning every few seconds.
            ray.init(include_dashboard=True, dashboard_host="127.0.0.1", logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
