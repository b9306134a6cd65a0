"""How a test client reaches a Ferry that requires TLS, a client certificate or a token.

`ClientAccess()` is a plaintext channel without credentials; `root_ca` turns TLS on (the server's
certificate must be signed by it), `client` adds a client certificate (mutual TLS) and `token`
sends ``authorization: Bearer <token>`` with every call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from testkit.certs import Issued


@dataclass(frozen=True)
class ClientAccess:
    root_ca: bytes | None = None
    client: Issued | None = None
    token: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, Any], ...] = ()

    def with_token(self, token: str | None) -> ClientAccess:
        return replace(self, token=token)

    def channel(self, address: str) -> grpc.Channel:
        """A new channel to `address` with these credentials."""
        if self.root_ca is None:
            channel = grpc.insecure_channel(address, options=self.options)
        else:
            credentials = grpc.ssl_channel_credentials(
                self.root_ca,
                self.client.key_pem if self.client else None,
                self.client.cert_pem if self.client else None,
            )
            channel = grpc.secure_channel(address, credentials, options=self.options)
        if self.token is None:
            return channel
        return grpc.intercept_channel(channel, BearerToken(self.token))


class _Details(grpc.ClientCallDetails):
    def __init__(
        self, base: grpc.ClientCallDetails, metadata: tuple[tuple[str, str | bytes], ...]
    ) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerToken(***)"

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _Details(details, (*(details.metadata or ()), self._header))

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)
