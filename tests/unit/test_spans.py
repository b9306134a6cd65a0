"""Span export: off without OpenTelemetry's variables (only the metadata's context travels), and
with an exporter a publish span whose context the events carry, and a span per delivered
record that carries a traceparent."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from sidecar.observability.spans import Tracing, tracing_from_environment

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def test_without_an_endpoint_no_spans_and_the_context_travels_as_it_came() -> None:
    assert not tracing_from_environment({}).exporting
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"}
    assert not tracing_from_environment(disabled).exporting
    assert tracing_from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    ).exporting
    trace = Tracing().call("m", (("traceparent", PARENT),), {})
    assert trace.headers == (("traceparent", PARENT.encode()),)
    assert trace.span is None
    trace.end("INTERNAL")  # nothing to end
    Tracing().delivered("s", [])


def test_a_publish_span_is_the_events_parent_and_deliveries_hang_below_it() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter)
    metadata = (("traceparent", PARENT), ("tracestate", "vendor=abc"))
    trace = tracing.call(
        "ferry.v1.Publisher/Publish", metadata, {"messaging.destination.name": "t"}
    )
    [(name, value), state] = trace.headers
    version, trace_id, span_id, flags = value.decode().split("-")
    assert (name, version, trace_id, flags) == ("traceparent", "00", TRACE_ID, "01")
    assert span_id != PARENT_ID
    assert state == ("tracestate", b"vendor=abc")
    trace.end()
    refused = tracing.call("ferry.v1.Publisher/PublishBatch", (), {})
    refused.end("RESOURCE_EXHAUSTED")

    delivery = spb.Delivery(partition=2, offset=7, delivery_attempt=1)
    delivery.event.topic = "t"
    delivery.event.event_id = "e-1"
    delivery.event.headers.add(key="traceparent", value=value)
    untraced = spb.Delivery(partition=2, offset=8, delivery_attempt=1)
    tracing.delivered("readers", [delivery, untraced])
    tracing.flush()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    publish = spans["ferry.v1.Publisher/Publish"]
    assert publish.kind is SpanKind.SERVER
    assert format(publish.context.trace_id, "032x") == TRACE_ID
    assert format(publish.parent.span_id, "016x") == PARENT_ID
    assert format(publish.context.span_id, "016x") == span_id
    assert publish.attributes["messaging.destination.name"] == "t"
    batch = spans["ferry.v1.Publisher/PublishBatch"]
    assert batch.parent is None  # no context came: a trace of its own
    assert batch.status.status_code is StatusCode.ERROR
    deliver = spans["deliver t"]
    assert deliver.kind is SpanKind.CONSUMER
    assert deliver.parent.span_id == publish.context.span_id
    assert deliver.attributes["messaging.consumer.group.name"] == "readers"
    assert deliver.attributes["messaging.kafka.offset"] == 7
    assert len(exporter.get_finished_spans()) == 3  # the untraced record has none
    assert publish.resource.attributes["service.name"] == "ferry"
