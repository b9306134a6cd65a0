"""The ferry.v1.Publisher servicer: request → validation → PublishService → response.

Each request's outcome and latency go to the metrics once it is answered (per request, not
per event), and a call's W3C trace context (`traceparent`, `tracestate` metadata) travels with
its events as Kafka record headers (sidecar/observability/tracing.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from sidecar.api.access import ANYONE, AccessControl, Caller, OpenAccess
from sidecar.api.publish_results import fill_entries, fill_result
from sidecar.api.publish_stream import PublishStreamCall
from sidecar.api.status import code_name
from sidecar.errors import InvalidArgument
from sidecar.model import Accepted, AckLevel, OutgoingEvent
from sidecar.observability.metrics import PublishMetrics
from sidecar.observability.spans import CallTrace, Tracing
from sidecar.observability.tracing import TraceContext, trace_context, with_trace
from sidecar.publish.service import PublishService
from sidecar.validation import (
    CheckedEvents,
    EventLimits,
    check_event,
    check_events,
    duration_seconds,
)

#: A stream request's events, their bytes (`CheckedEvents.size`), ack level and Kafka wait.
StreamRequest = tuple[list[OutgoingEvent], int, AckLevel, float]
MAX_KAFKA_WAIT_S = 600.0
DEADLINE_MARGIN_S = 0.05
_LEVELS = {
    pb.ACK_LEVEL_UNSPECIFIED: AckLevel.DURABLE,
    pb.ACK_LEVEL_DURABLE: AckLevel.DURABLE,
    pb.ACK_LEVEL_KAFKA: AckLevel.KAFKA,
}
PUBLISH = "ferry.v1.Publisher/Publish"
PUBLISH_BATCH = "ferry.v1.Publisher/PublishBatch"
#: The metrics' ack_level label of a requested level (a value Ferry does not know: "unknown").
LEVEL_LABELS = {
    pb.ACK_LEVEL_UNSPECIFIED: "durable",
    pb.ACK_LEVEL_DURABLE: "durable",
    pb.ACK_LEVEL_KAFKA: "kafka",
}


class PublisherServicer(publisher_pb2_grpc.PublisherServicer):
    """Thin adapter of the Publisher service onto `PublishService`."""

    def __init__(
        self,
        publish: PublishService,
        limits: EventLimits,
        *,
        max_batch_events: int,
        default_kafka_wait_s: float,
        access: AccessControl | None = None,
        metrics: PublishMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._publish = publish
        self._access = access or OpenAccess()
        self._metrics = metrics or PublishMetrics()
        self._tracing = tracing or Tracing()
        self._limits = limits
        self._max_batch = max_batch_events
        self._default_wait = default_kafka_wait_s

    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PublishResponse:
        started = time.perf_counter()
        level = LEVEL_LABELS.get(request.ack_level, "unknown")
        trace = self._trace(PUBLISH, context, [request.event])
        try:
            response = await self._publish_one(request, context, trace.headers)
        except Exception as error:
            code = code_name(error)
            self._metrics.refused(level, 1, code, started)
            trace.end(code)
            raise
        self._metrics.answered(level, 1, (), started)
        trace.end()
        return response

    async def _publish_one(
        self,
        request: pb.PublishRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        trace: TraceContext,
    ) -> pb.PublishResponse:
        if not request.HasField("event"):
            raise InvalidArgument("event", "is required")
        event = check_event(request.event, self._limits)
        if trace:
            event = with_trace(event, trace)
        self._access.caller(context).check_publish([event.topic])
        level = self._level(request.ack_level)
        wait = self._wait(request, _commit_wait(context))
        [outcome] = await self._publish.publish([event], level, wait, _commit_wait(context))
        if not isinstance(outcome, Accepted):
            raise outcome.error
        response = pb.PublishResponse()
        fill_result(response.result, outcome)
        return response

    async def PublishBatch(
        self, request: pb.PublishBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PublishBatchResponse:
        started = time.perf_counter()
        label = LEVEL_LABELS.get(request.ack_level, "unknown")
        trace = self._trace(PUBLISH_BATCH, context, request.events)
        try:
            events = self._events(request.events, trace.headers).events
            self._access.caller(context).check_publish(e.topic for e in events)
            level = self._level(request.ack_level)
            wait = self._wait(request, _commit_wait(context))
            outcomes = await self._publish.publish(events, level, wait, _commit_wait(context))
        except Exception as error:
            code = code_name(error)
            self._metrics.refused(label, len(request.events), code, started)
            trace.end(code)
            raise
        response = pb.PublishBatchResponse()
        refused = fill_entries(response.entries, outcomes)
        self._metrics.answered(label, len(outcomes), refused, started)
        trace.end()
        return response

    async def PublishStream(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.PublishStreamResponse]:
        caller = self._access.caller(context)
        trace = trace_context(context)

        def translate(request: pb.PublishStreamRequest) -> StreamRequest:
            return self._stream_request(request, caller, trace)

        call = PublishStreamCall(self._publish, translate, metrics=self._metrics)
        async for response in call.responses(requests):
            yield response

    def _trace(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], events: Sequence[pb.Event]
    ) -> CallTrace:
        """The call's trace: its metadata's context, or a span of its own when exporting (its
        attributes are gathered only then)."""
        attributes: dict[str, Any] = {}
        if self._tracing.exporting:
            topics = {e.topic for e in events}
            attributes = {"rpc.method": method, "messaging.batch.message_count": len(events)}
            if len(topics) == 1:
                attributes["messaging.destination.name"] = topics.pop()
        return self._tracing.call(method, context.invocation_metadata(), attributes)

    def _stream_request(
        self, request: pb.PublishStreamRequest, caller: Caller = ANYONE, trace: TraceContext = ()
    ) -> StreamRequest:
        events, size = self._events(request.events, trace)
        caller.check_publish(e.topic for e in events)
        return events, size, self._level(request.ack_level), self._wait(request, None)

    def _events(self, messages: Sequence[pb.Event], trace: TraceContext = ()) -> CheckedEvents:
        if not messages:
            raise InvalidArgument("events", "must hold at least one event")
        if len(messages) > self._max_batch:
            raise InvalidArgument("events", f"at most {self._max_batch} events per batch")
        checked = check_events(messages, self._limits)
        if trace:
            return checked._replace(events=[with_trace(e, trace) for e in checked.events])
        return checked

    @staticmethod
    def _level(value: int) -> AckLevel:
        level: AckLevel | None = _LEVELS.get(value)  # type: ignore[call-overload]
        if level is None:
            raise InvalidArgument("ack_level", f"unknown value {value}")
        return level

    def _wait(
        self,
        request: pb.PublishRequest | pb.PublishBatchRequest | pb.PublishStreamRequest,
        commit_wait: float | None,
    ) -> float:
        wait = self._default_wait
        if request.HasField("kafka_wait"):
            wait = duration_seconds(request.kafka_wait, "kafka_wait", 0.0, MAX_KAFKA_WAIT_S)
            if wait <= 0:
                raise InvalidArgument("kafka_wait", f"must be > 0 and at most {MAX_KAFKA_WAIT_S}s")
        if commit_wait is not None:
            # Answer DEADLINE_EXCEEDED ourselves, with the "still delivered" message.
            wait = min(wait, commit_wait)
        return wait


def _commit_wait(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """How long Ferry may wait before answering DEADLINE_EXCEEDED itself, with the event ids;
    a little less than the call's deadline, so that the answer still reaches the client."""
    remaining = context.time_remaining()
    return None if remaining is None else max(0.0, remaining - DEADLINE_MARGIN_S)
