"""The HTTP listener of the Prometheus metrics (`--metrics-listen`, path /metrics), on threads
of its own: `metrics-http` accepts, and each scrape runs on a short-lived thread of the server.

A scrape asks the event loop for a state snapshot (sidecar/observability/snapshot.py) and waits
for it at most `SNAPSHOT_TIMEOUT_S`; a loop too busy to answer in time costs that scrape its
snapshot metrics, never the loop its time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from sidecar.config_observability import metrics_address
from sidecar.errors import ConfigError
from sidecar.observability.snapshot import FerrySnapshot

log = structlog.get_logger(__name__)
THREAD_NAME = "metrics-http"
SNAPSHOT_TIMEOUT_S = 5.0


class MetricsServer:
    """The running listener; `close()` stops it."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._httpd.server_port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)


def serve_metrics(registry: CollectorRegistry, listen: str) -> MetricsServer:
    """Serve `registry` on `listen` (host:port; port 0 picks a free one); ConfigError if the
    address cannot be bound."""
    host, port = metrics_address(listen)
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"metrics_listen: cannot listen on {listen}: {exc.strerror}") from None
    thread.name = THREAD_NAME
    server = MetricsServer(httpd, thread)
    log.info("metrics_serving", listen=listen, port=server.port, path="/metrics")
    return server


def snapshot_on_loop(
    take: Callable[[], Coroutine[Any, Any, FerrySnapshot]],
    loop: asyncio.AbstractEventLoop,
    timeout_s: float = SNAPSHOT_TIMEOUT_S,
) -> Callable[[], FerrySnapshot | None]:
    """A function for a scrape's thread: runs `take()` on `loop`, waits at most `timeout_s`;
    None (logged) when it fails or takes longer."""

    def snapshot() -> FerrySnapshot | None:
        work = take()
        try:
            future = asyncio.run_coroutine_threadsafe(work, loop)
        except RuntimeError:  # the loop closed: Ferry is exiting
            work.close()
            return None
        try:
            return future.result(timeout_s)
        except Exception as exc:
            future.cancel()
            log.warning("metrics_snapshot_failed", error=repr(exc), timeout_s=timeout_s)
            return None

    return snapshot
