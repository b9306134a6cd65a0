"""The ferry.v1.Publisher servicer: request → validation → Publishing → response. No logic here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc, record_pb2
from sidecar.api.status import to_failure
from sidecar.errors import InvalidArgument
from sidecar.model import Accepted, AckLevel, Headers, OutgoingEvent
from sidecar.publishing import Publishing
from sidecar.validation import EventLimits, check_event, duration_seconds

MAX_KAFKA_WAIT_S = 600.0
DEADLINE_MARGIN_S = 0.05
_LEVELS = {
    pb.ACK_LEVEL_UNSPECIFIED: AckLevel.DURABLE,
    pb.ACK_LEVEL_DURABLE: AckLevel.DURABLE,
    pb.ACK_LEVEL_KAFKA: AckLevel.KAFKA,
}


class PublisherServicer(publisher_pb2_grpc.PublisherServicer):
    """Thin adapter of the Publisher service onto `Publishing`."""

    def __init__(
        self,
        publishing: Publishing,
        limits: EventLimits,
        *,
        max_batch_events: int,
        default_kafka_wait_s: float,
    ) -> None:
        self._publishing = publishing
        self._limits = limits
        self._max_batch = max_batch_events
        self._default_wait = default_kafka_wait_s

    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PublishResponse:
        if not request.HasField("event"):
            raise InvalidArgument("event", "is required")
        event = self._event(request.event, "event")
        level, wait = self._level(request.ack_level), self._wait(request, context)
        [outcome] = await self._publishing.publish([event], level, wait, _commit_wait(context))
        if not isinstance(outcome, Accepted):
            raise outcome.error
        response = pb.PublishResponse()
        _fill_result(response.result, outcome)
        return response

    async def PublishBatch(
        self, request: pb.PublishBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PublishBatchResponse:
        if not request.events:
            raise InvalidArgument("events", "must hold at least one event")
        if len(request.events) > self._max_batch:
            raise InvalidArgument("events", f"at most {self._max_batch} events per batch")
        events = [self._event(e, f"events[{i}]") for i, e in enumerate(request.events)]
        level, wait = self._level(request.ack_level), self._wait(request, context)
        outcomes = await self._publishing.publish(events, level, wait, _commit_wait(context))
        response = pb.PublishBatchResponse()
        add_entry = response.entries.add
        for outcome in outcomes:
            # Filling sub-messages in place is several times cheaper than building and copying.
            entry = add_entry()
            if isinstance(outcome, Accepted):
                _fill_result(entry.result, outcome)
            else:
                entry.error.CopyFrom(to_failure(outcome.error))
        return response

    def _event(self, message: pb.Event, field: str) -> OutgoingEvent:
        has = message.HasField
        return check_event(
            topic=message.topic,
            key=message.key if has("key") else None,
            payload=message.payload if has("payload") else None,
            headers=_headers(message.headers) if message.headers else (),
            event_id=message.event_id,
            limits=self._limits,
            field=field,
        )

    @staticmethod
    def _level(value: int) -> AckLevel:
        level: AckLevel | None = _LEVELS.get(value)  # type: ignore[call-overload]
        if level is None:
            raise InvalidArgument("ack_level", f"unknown value {value}")
        return level

    def _wait(
        self,
        request: pb.PublishRequest | pb.PublishBatchRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> float:
        wait = self._default_wait
        if request.HasField("kafka_wait"):
            wait = duration_seconds(request.kafka_wait, "kafka_wait", 0.0, MAX_KAFKA_WAIT_S)
            if wait <= 0:
                raise InvalidArgument("kafka_wait", f"must be > 0 and at most {MAX_KAFKA_WAIT_S}s")
        commit_wait = _commit_wait(context)
        if commit_wait is not None:
            # Answer DEADLINE_EXCEEDED ourselves, with the "still delivered" message.
            wait = min(wait, commit_wait)
        return wait


def _commit_wait(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """How long Ferry may wait before answering DEADLINE_EXCEEDED itself, with the event ids;
    a little less than the call's deadline, so that the answer still reaches the client."""
    remaining = context.time_remaining()
    return None if remaining is None else max(0.0, remaining - DEADLINE_MARGIN_S)


def _headers(headers: Iterable[record_pb2.Header]) -> Headers:
    return tuple((h.key, h.value if h.HasField("value") else None) for h in headers)


def _fill_result(result: pb.PublishResult, outcome: Accepted) -> None:
    result.event_id = outcome.event_id
    result.sequence = outcome.sequence
    if outcome.duplicate:
        result.duplicate = True
    if outcome.publish_time_ms:
        stamp = result.publish_time
        stamp.seconds, millis = divmod(outcome.publish_time_ms, 1000)
        stamp.nanos = millis * 1_000_000
    if outcome.position is not None:
        result.kafka_position.partition = outcome.position.partition
        result.kafka_position.offset = outcome.position.offset
