"""Span export over OTLP/gRPC to a collector stand-in (an in-process TraceService), turned on by
OpenTelemetry's own variables: Ferry's publish span is a child of the caller's, the record
carries Ferry's span context, and its delivery's span hangs below that."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.ferry_process import Ferries, FerryProcess
from testkit.kafka_read import read_topic
from testkit.ports import HOST
from testkit.publishing import event
from testkit.stream_client import open_stream
from testkit.subscribe_calls import open_request
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it: name → (trace id, span id, parent span id), hex."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[str, str, str]] = {}
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        ids = (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex())
                        self.spans[span.name] = ids
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_are_exported_when_an_otlp_endpoint_is_set(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("otlp", partitions=1)
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    ferry = FerryProcess(
        ferries.root / "otlp",
        kafka.bootstrap,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "ferry-under-test",
        },
    )
    try:
        ferry.start()
        ferry.publisher().Publish(
            pb.PublishRequest(event=event(topic, "o-1")),
            metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),),
            timeout=30,
        )
        [record] = read_topic(kafka.bootstrap, topic, expect=1, quiet=0.5)
        _, trace_id, ferry_span, _ = record.headers["traceparent"].decode().split("-")
        assert trace_id == TRACE_ID
        stream = open_stream(ferry, open_request("otlp-readers", [topic], lease_s=30))
        try:
            [delivered] = stream.take(timeout=30)
            stream.ack([delivered.ack_id])
        finally:
            stream.cancel()
        wait_for(lambda: f"deliver {topic}" in collector.spans, 30, what="the deliver span")
        wait_for(lambda: "ferry.v1.Publisher/Publish" in collector.spans, 30, what="publish span")
    finally:
        ferry.kill()
        server.stop(0)
    assert collector.spans["ferry.v1.Publisher/Publish"] == (TRACE_ID, ferry_span, CALLER_SPAN)
    deliver_trace, _, deliver_parent = collector.spans[f"deliver {topic}"]
    assert (deliver_trace, deliver_parent) == (TRACE_ID, ferry_span)
