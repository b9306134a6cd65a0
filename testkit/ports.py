"""Loopback ports: a free one for a process about to start, and checks of a given port.

Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A port the kernel reports free now (from the ephemeral range)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a listener could bind `port` now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def port_open(port: int) -> bool:
    """Whether something accepts connections on `port`."""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def stable_free_port(exclude: set[int] | None = None) -> int:
    """A free port *below* the ephemeral range, so that no outgoing connection can take it
    while its listener is down (a restarted Kafka node, or a proxy, reuses its ports)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(500):
        port = random.randint(min(20000, low - 2000), low - 1)
        if port not in (exclude or set()) and port_free(port):
            return port
    raise OSError("no free loopback port found below the ephemeral range")
