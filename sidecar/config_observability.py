"""Ferry's settings for being observed: where the Prometheus metrics are served.

`Settings` inherits these fields; they are flags and FERRY_* variables like any other. Traces
are configured by OpenTelemetry's own variables (OTEL_EXPORTER_OTLP_ENDPOINT and the rest,
sidecar/observability/tracing.py), not here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"


class ObservabilitySettings(BaseModel):
    """The observability fields of `Settings`."""

    metrics_listen: str = Field(
        DEFAULT_METRICS_LISTEN,
        description="host:port of the Prometheus metrics endpoint (HTTP, path /metrics); "
        "empty: no metrics endpoint",
    )

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str) -> str:
        value = value.strip()
        if value:
            metrics_address(value)  # raises ValueError naming the problem
        return value


def metrics_address(listen: str) -> tuple[str, int]:
    """(host, port) of a host:port (an IPv6 host in brackets); ValueError if malformed."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected host:port (e.g. 0.0.0.0:9464), got {listen!r}")
    return host.strip("[]"), int(port)
