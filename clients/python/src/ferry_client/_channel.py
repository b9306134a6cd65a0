"""Where Ferry is (FERRY_ADDR) and the channel options every client uses."""

from __future__ import annotations

import os
from importlib import resources

DEFAULT_ADDR = "127.0.0.1:50051"


def ferry_addr(addr: str | None = None) -> str:
    """The given address, else $FERRY_ADDR, else the default."""
    return addr or os.environ.get("FERRY_ADDR") or DEFAULT_ADDR


def channel_options(service_config: bool = False) -> list[tuple[str, int | str]]:
    """Reconnect quickly after Ferry restarts (gRPC's default backoff grows to 120 s).

    With `service_config`, the proto's grpc_service_config.json becomes the channel's
    default: gRPC then also retries UNAVAILABLE and RESOURCE_EXHAUSTED inside each attempt
    of the client's own loop, without RetryInfo or the ErrorInfo distinction.
    """
    options: list[tuple[str, int | str]] = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if service_config:
        config = resources.files("ferry_client._gen").joinpath("grpc_service_config.json")
        options.append(("grpc.service_config", config.read_text()))
    return options
