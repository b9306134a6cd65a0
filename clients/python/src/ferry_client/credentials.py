"""How a client reaches a Ferry that serves TLS (--tls-cert, --tls-key), may require a client
certificate (--tls-client-ca: mutual TLS), and may require a bearer token (--token-file,
FERRY_TOKENS).

Pass `credentials=Credentials(...)` to a client, or `Credentials.from_env()` inside a pod,
whose variables are those `ferry status` reads. Without TLS a token is sent only to a
loopback address or a unix socket: a token sent in clear text over a network is a token
given away.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ENV_TLS_CA = "FERRY_TLS_CA"
ENV_TLS_SERVER_NAME = "FERRY_TLS_SERVER_NAME"
ENV_TLS_CLIENT_CERT = "FERRY_TLS_CLIENT_CERT"
ENV_TLS_CLIENT_KEY = "FERRY_TLS_CLIENT_KEY"
ENV_TOKEN_FILE = "FERRY_TOKEN_FILE"  # noqa: S105 (a variable name, not a secret)


@dataclass(frozen=True)
class TLS:
    """TLS to Ferry. Files are PEM.

    `ca_file`: the CA that signed Ferry's certificate (None: the system's roots).
    `cert_file` and `key_file`: this client's certificate and key, for mutual TLS (both or
    neither). `server_name`: the name to check Ferry's certificate against, when it is not
    the host of the address.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("TLS needs both cert_file and key_file, or neither")


@dataclass(frozen=True)
class Credentials:
    """TLS (None: plaintext) and a bearer token sent as `authorization: Bearer <token>`."""

    tls: TLS | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Credentials:
        """FERRY_TLS_CA (turns TLS on), FERRY_TLS_SERVER_NAME, FERRY_TLS_CLIENT_CERT and
        FERRY_TLS_CLIENT_KEY (mutual TLS), FERRY_TOKEN_FILE (the first token of the first
        file of a comma-separated list). Unset variables leave that part off."""
        tls = None
        if ca := environ.get(ENV_TLS_CA):
            tls = TLS(
                ca_file=ca,
                cert_file=environ.get(ENV_TLS_CLIENT_CERT) or None,
                key_file=environ.get(ENV_TLS_CLIENT_KEY) or None,
                server_name=environ.get(ENV_TLS_SERVER_NAME) or None,
            )
        token = None
        if files := environ.get(ENV_TOKEN_FILE):
            token = read_token_file(files.split(",")[0].strip())
        return cls(tls, token)


def read_token_file(path: str | Path) -> str:
    """The first token of a file in Ferry's token file format: one token a line; blank lines
    and lines starting with # are skipped. ValueError if it holds none."""
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    raise ValueError(f"token file {path} holds no token")


def channel_credentials(addr: str, credentials: Credentials) -> grpc.ChannelCredentials | None:
    """What a secure channel to `addr` needs, or None for a plaintext one."""
    transport: grpc.ChannelCredentials | None = None
    if credentials.tls is not None:
        transport = _tls_credentials(credentials.tls)
    elif credentials.token:
        # Plaintext, but only to this machine: gRPC refuses to connect anywhere else.
        kind = grpc.LocalConnectionType.UDS if addr.startswith("unix:") else None
        transport = grpc.local_channel_credentials(kind or grpc.LocalConnectionType.LOCAL_TCP)
    if transport is None or not credentials.token:
        return transport
    return grpc.composite_channel_credentials(
        transport, grpc.access_token_call_credentials(credentials.token)
    )


def tls_options(credentials: Credentials) -> list[tuple[str, int | str]]:
    """Channel options for TLS: the name Ferry's certificate is checked against."""
    tls = credentials.tls
    if tls is None or not tls.server_name:
        return []
    return [("grpc.ssl_target_name_override", tls.server_name)]


def _tls_credentials(tls: TLS) -> grpc.ChannelCredentials:
    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca_file),
        private_key=read(tls.key_file),
        certificate_chain=read(tls.cert_file),
    )
