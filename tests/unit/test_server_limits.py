"""The limits a hostile client meets, as gRPC channel arguments of the server."""

from __future__ import annotations

import os

import pytest

from sidecar.api.server import server_options
from sidecar.config import load_settings
from sidecar.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FERRY_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = load_settings()
    assert s.max_concurrent_rpcs == 5000
    options = dict(server_options(s))
    assert options["grpc.max_concurrent_streams"] == 2000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.http2.max_ping_strikes"] == 2
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.max_connection_idle_ms"] == 3_600_000
    assert "grpc.max_connection_age_ms" not in options  # it would end Subscribe streams
    assert options["grpc.max_receive_message_length"] == s.max_request_bytes


def test_flags_reach_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_MAX_CONNECTION_STREAMS", "16")
    monkeypatch.setenv("FERRY_MIN_PING_INTERVAL_S", "0.5")
    monkeypatch.setenv("FERRY_MAX_CONNECTION_IDLE_S", "0")
    monkeypatch.setenv("FERRY_MAX_CONNECTION_AGE_S", "600")
    monkeypatch.setenv("FERRY_MAX_CONNECTION_AGE_GRACE_S", "5")
    monkeypatch.setenv("FERRY_MAX_CONCURRENT_RPCS", "7")
    s = load_settings()
    assert s.max_concurrent_rpcs == 7
    options = dict(server_options(s))
    assert options["grpc.max_concurrent_streams"] == 16
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 500
    assert "grpc.max_connection_idle_ms" not in options
    assert options["grpc.max_connection_age_ms"] == 600_000
    assert options["grpc.max_connection_age_grace_ms"] == 5000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrent_rpcs", 0),
        ("max_connection_streams", -1),
        ("min_ping_interval_s", 0),
        ("max_connection_idle_s", -1),
        ("max_connection_age_s", -1),
        ("max_connection_age_grace_s", -1),
    ],
)
def test_bad_limits_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(**{field: value})
