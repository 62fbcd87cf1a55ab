"""Joining a cluster through RAY_ADDRESS: an address where nothing answers fails at once with
a clear error (Ray itself would retry for over a minute), real sockets on loopback."""

from __future__ import annotations

import socket

import pytest
import ray

from fairtrain.errors import TrainingError
from fairtrain.training.ray_runtime import _head_endpoint, ray_session, unreachable_reason


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again on exit: nothing listens there


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        ("ray://head.example:10001", ("head.example", 10001)),
        ("[::1]:6379", ("::1", 6379)),
        ("auto", None),
        ("local", None),
        ("head.example", None),
        ("http://127.0.0.1:8265", None),  # a dashboard address: Ray explains that itself
    ],
)
def test_the_head_endpoint_is_read_from_the_forms_ray_accepts(address, endpoint):
    assert _head_endpoint(address) == endpoint


def test_a_listening_head_passes_the_check():
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        assert unreachable_reason(f"127.0.0.1:{head.getsockname()[1]}") is None
    assert unreachable_reason("auto") is None  # Ray finds the local cluster itself


def test_an_address_where_nothing_answers_fails_at_once_and_says_what_to_check(monkeypatch):
    assert not ray.is_initialized(), "a test before this one left Ray running"
    address = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(TrainingError) as error, ray_session():
        pytest.fail("the session must not start")
    message = str(error.value)
    assert f"RAY_ADDRESS={address}" in message
    assert "nothing accepts connections" in message and "Connection refused" in message
    assert "Unset RAY_ADDRESS" in message
    assert not ray.is_initialized()
