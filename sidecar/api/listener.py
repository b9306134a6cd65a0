"""Binds the gRPC server to its listen address: a TCP host:port, or a unix socket file.

A unix socket is created owner-only (umask 077 while gRPC binds, so no other user can connect
before its mode is set) and then given `--listen-socket-mode` (0600 by default). gRPC replaces
an existing socket file without asking, so Ferry looks first: a socket file that refuses
connections is stale (a run that was SIGKILLed) and removed; one that accepts them belongs to a
live server and Ferry refuses to start; anything else at the path is never touched. gRPC removes
the socket file when the server stops.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import grpc
import structlog

from sidecar.errors import ConfigError

log = structlog.get_logger(__name__)
#: How long a connection attempt to an existing socket file may take before it counts as live.
PROBE_TIMEOUT_S = 1.0
#: The umask while gRPC creates the socket file: owner-only until its mode is set.
OWNER_ONLY = 0o077


def bind(
    server: grpc.aio.Server,
    target: str,
    credentials: grpc.ServerCredentials | None,
    socket_path: Path | None = None,
    socket_mode: int = 0o600,
) -> int:
    """Bind `target` (with TLS when `credentials` are given); the bound port (1 for a socket).

    `socket_path` is the file of a unix:// target: a stale one is removed first, and the new one
    gets `socket_mode`.
    """
    if socket_path is not None:
        remove_stale_socket(socket_path)
        old_umask = os.umask(OWNER_ONLY)
    try:
        if credentials is None:
            port = server.add_insecure_port(target)
        else:
            port = server.add_secure_port(target, credentials)
    finally:
        if socket_path is not None:
            os.umask(old_umask)
    if port == 0:
        raise OSError(f"could not bind {target}")
    if socket_path is not None:
        os.chmod(socket_path, socket_mode)
    return port


def remove_stale_socket(path: Path) -> None:
    """Remove `path` if it is a socket file nobody serves on; ConfigError if it is a live
    server's socket, not a socket at all, or its directory does not exist."""
    if not path.parent.is_dir():
        raise ConfigError(f"listen: the directory of the socket {path} does not exist")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"listen: {path} exists and is not a socket; Ferry leaves it alone")
    if _accepts_connections(path):
        raise ConfigError(f"listen: another process serves on {path}")
    path.unlink(missing_ok=True)
    log.info("stale_socket_removed", path=str(path))


def _accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT_S)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError as exc:
            raise ConfigError(f"listen: cannot tell whether {path} is in use: {exc}") from None
        return True
