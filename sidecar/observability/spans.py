"""OpenTelemetry spans, exported over OTLP/gRPC only when OpenTelemetry's own variables ask for
it (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED`
turns it off). The exporter reads the rest of the standard variables itself (headers,
certificates, timeout, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
`OTEL_BSP_*`).

Without them nothing of the SDK is even imported: `Tracing` hands each publish call the trace
context of its metadata (sidecar/observability/tracing.py) and makes no span, for the cost of
one look through the metadata. With them:

- `Publish` and `PublishBatch` get a SERVER span each, a child of the call's `traceparent`
  (a new trace without one), and the events carry that span's context in their
  `traceparent` header, so a consumer's spans hang below Ferry's publish. A PublishStream
  hands its stream's trace context on as it is, without spans.
- Each delivered record that carries a `traceparent` header gets a CONSUMER span (`deliver
  <topic>`, a child of that context) when it is written to a Subscribe stream; the record's
  headers stay as Kafka holds them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog

from sidecar import __version__
from sidecar.observability.tracing import (
    TRACEPARENT,
    TRACESTATE,
    TraceContext,
    trace_headers,
)

log = structlog.get_logger(__name__)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
#: How long the drain waits for spans still queued to be exported.
FLUSH_TIMEOUT_MS = 500


class CallTrace:
    """One publish call's trace: the headers its events get, and the span to end (if any)."""

    __slots__ = ("headers", "span")

    def __init__(self, headers: TraceContext, span: Any = None) -> None:
        self.headers = headers
        self.span = span

    def end(self, error_code: str | None = None) -> None:
        """The call was answered (`error_code`: the gRPC code it was refused with)."""
        span = self.span
        if span is None:
            return
        if error_code is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("rpc.grpc.status_code_name", error_code)
            span.set_status(Status(StatusCode.ERROR, error_code))
        span.end()


class Tracing:
    """Trace context for publish calls; spans and their export when configured."""

    def __init__(self, exporter: Any = None) -> None:
        """`exporter`: an OpenTelemetry SpanExporter; None: no spans."""
        self._tracer: Any = None
        self._provider: Any = None
        if exporter is not None:
            self._start(exporter)

    @property
    def exporting(self) -> bool:
        return self._tracer is not None

    def _start(self, exporter: Any) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.version": __version__})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "ferry"}))  # no OTEL_SERVICE_NAME
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("ferry", __version__)

    def call(self, method: str, metadata: Any, attributes: Mapping[str, Any]) -> CallTrace:
        """The trace of a publish call with `metadata`: its own context handed on, or a span of
        its own (a child of that context) whose context is handed on."""
        headers = trace_headers(metadata)
        tracer = self._tracer
        if tracer is None:
            return CallTrace(headers)
        from opentelemetry.trace import SpanKind

        span = tracer.start_span(
            method,
            context=_context_of(headers),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "messaging.system": "kafka", **attributes},
        )
        return CallTrace(_headers_of(span) or headers, span)

    def delivered(self, subscription: str, deliveries: Iterable[Any]) -> None:
        """CONSUMER spans for the delivered records (ferry.v1.Delivery messages) that carry a
        traceparent; does nothing when not exporting."""
        tracer = self._tracer
        if tracer is None:
            return
        from opentelemetry.trace import SpanKind

        for delivery in deliveries:
            event = delivery.event
            carried = tuple(
                (h.key, h.value) for h in event.headers if h.key in (TRACEPARENT, TRACESTATE)
            )
            if not carried:
                continue
            span = tracer.start_span(
                f"deliver {event.topic}",
                context=_context_of(carried),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "receive",
                    "messaging.destination.name": event.topic,
                    "messaging.consumer.group.name": subscription,
                    "messaging.destination.partition.id": str(delivery.partition),
                    "messaging.kafka.offset": delivery.offset,
                    "messaging.message.id": event.event_id,
                    "ferry.delivery_attempt": delivery.delivery_attempt,
                },
            )
            span.end()

    def flush(self) -> None:
        """Export what is queued, waiting at most FLUSH_TIMEOUT_MS (blocking: off the loop)."""
        if self._provider is not None:
            self._provider.force_flush(FLUSH_TIMEOUT_MS)


def _context_of(headers: Sequence[tuple[str, bytes | None]]) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {key: value.decode() for key, value in headers if value is not None}
    return TraceContextTextMapPropagator().extract(carrier)


def _headers_of(span: Any) -> TraceContext:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    return tuple((key, value.encode()) for key, value in carrier.items())


def tracing_from_environment(env: Mapping[str, str] = os.environ) -> Tracing:
    """Spans exported over OTLP/gRPC when the OpenTelemetry variables name an endpoint."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Tracing()
    endpoint = next((env[v] for v in ENDPOINT_VARIABLES if env.get(v, "").strip()), None)
    if endpoint is None:
        return Tracing()
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol.strip() != "grpc":
        log.warning("otel_protocol_unsupported", protocol=protocol, using="grpc")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    log.info("span_export", endpoint=endpoint, protocol="grpc")
    return Tracing(OTLPSpanExporter())
