"""Where Ferry is (FERRY_ADDR), the channel options every client uses, and the channels the
clients open for themselves (plaintext, or as `Credentials` say)."""

from __future__ import annotations

import os
from importlib import resources

import grpc

from ferry_client.credentials import Credentials, channel_credentials, tls_options

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


def open_channel(
    addr: str | None, credentials: Credentials | None, service_config: bool = False
) -> grpc.Channel:
    """A channel to Ferry at `ferry_addr(addr)`, secured as `credentials` say."""
    target, options = _target_and_options(addr, credentials, service_config)
    secure = channel_credentials(target, credentials) if credentials else None
    if secure is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, secure, options=options)


def open_aio_channel(
    addr: str | None, credentials: Credentials | None, service_config: bool = False
) -> grpc.aio.Channel:
    """`open_channel` for asyncio."""
    target, options = _target_and_options(addr, credentials, service_config)
    secure = channel_credentials(target, credentials) if credentials else None
    if secure is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, secure, options=options)


def _target_and_options(
    addr: str | None, credentials: Credentials | None, service_config: bool
) -> tuple[str, list[tuple[str, int | str]]]:
    options = channel_options(service_config)
    if credentials is not None:
        options += tls_options(credentials)
    return ferry_addr(addr), options
