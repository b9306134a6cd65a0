"""The ferry.v1.Subscriber servicer: translates messages to and from the subscription registry.

No dispatching logic lives here: the stream handler opens a stream, pumps
its outbox onto the wire (batching leased records), and feeds acks, nacks
and extensions from the client to the subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from sidecar._gen.ferry.v1 import subscriber_pb2_grpc
from sidecar.clock import Clock
from sidecar.errors import InvalidArgument, UndecodableRequest
from sidecar.subscribe.leases import AckOutcome
from sidecar.subscribe.records import presentation
from sidecar.subscribe.registry import SubscriptionRegistry
from sidecar.subscribe.stream import (
    AckReport,
    LeasedBatch,
    LeasedRecord,
    OutboxItem,
    Stream,
    StreamClosed,
    StreamOptions,
)
from sidecar.subscribe.subscription import AckResult, Subscription, SubscriptionSettings
from sidecar.validation import check_subscription, check_topic, duration_seconds

DEFAULT_LEASE_S = 30.0
MIN_LEASE_S, MAX_LEASE_S = 1.0, 600.0
DEFAULT_MAX_EVENTS, MAX_MAX_EVENTS = 1000, 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_TOPICS = 100
MAX_ACK_IDS = 10_000
MAX_NACK_DELAY_S = 3600.0
DELIVERIES_PER_MESSAGE = 500

_STATUS = {
    AckOutcome.APPLIED: pb.ACK_ID_STATUS_APPLIED,
    AckOutcome.ALREADY_ACKED: pb.ACK_ID_STATUS_ALREADY_ACKED,
    AckOutcome.EXPIRED: pb.ACK_ID_STATUS_EXPIRED,
    AckOutcome.UNKNOWN: pb.ACK_ID_STATUS_UNKNOWN,
    AckOutcome.REVOKED: pb.ACK_ID_STATUS_REVOKED,
}


def parse_open(
    message: pb.OpenSubscription,
) -> tuple[SubscriptionSettings, StreamOptions]:
    """Validate OpenSubscription; every error names its field."""
    name = check_subscription(message.subscription, "open.subscription")
    if not message.topics or len(message.topics) > MAX_TOPICS:
        raise InvalidArgument("open.topics", f"must list 1-{MAX_TOPICS} topics")
    topics = tuple(
        sorted({check_topic(t, f"open.topics[{i}]") for i, t in enumerate(message.topics)})
    )
    lease = DEFAULT_LEASE_S
    if message.HasField("lease_duration"):
        lease = duration_seconds(
            message.lease_duration, "open.lease_duration", MIN_LEASE_S, MAX_LEASE_S
        )
    max_events = message.max_outstanding_events or DEFAULT_MAX_EVENTS
    if not 0 < max_events <= MAX_MAX_EVENTS:
        raise InvalidArgument("open.max_outstanding_events", f"must be 1-{MAX_MAX_EVENTS}")
    max_bytes = message.max_outstanding_bytes or DEFAULT_MAX_BYTES
    if max_bytes <= 0:
        raise InvalidArgument("open.max_outstanding_bytes", "must be positive")
    attempts, dlq = message.max_delivery_attempts, message.dead_letter_topic
    if attempts < 0 or attempts == 1:
        raise InvalidArgument("open.max_delivery_attempts", "must be 0 (unlimited) or at least 2")
    if bool(attempts) != bool(dlq):
        raise InvalidArgument(
            "open.dead_letter_topic", "max_delivery_attempts and dead_letter_topic go together"
        )
    if dlq:
        check_topic(dlq, "open.dead_letter_topic")
        if dlq in topics:
            raise InvalidArgument("open.dead_letter_topic", "must not be a subscribed topic")
    if message.start_position not in (
        pb.START_POSITION_UNSPECIFIED, pb.START_POSITION_EARLIEST, pb.START_POSITION_LATEST,
    ):  # fmt: skip
        raise InvalidArgument("open.start_position", f"unknown value {message.start_position}")
    settings = SubscriptionSettings(
        name, topics, attempts, dlq, message.start_position == pb.START_POSITION_LATEST
    )
    return settings, StreamOptions(lease, max_events, max_bytes)


def _ack_ids(ids: Sequence[str], field: str) -> list[str]:
    if not ids or len(ids) > MAX_ACK_IDS:
        raise InvalidArgument(field, f"must hold 1-{MAX_ACK_IDS} ack ids")
    return list(ids)


class SubscriberServicer(subscriber_pb2_grpc.SubscriberServicer):
    """Thin adapter of the Subscriber service onto the registry."""

    def __init__(self, registry: SubscriptionRegistry, clock: Clock) -> None:
        self._registry = registry
        self._clock = clock

    async def Subscribe(
        self,
        request_iterator: AsyncIterator[pb.SubscribeRequest | UndecodableRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.SubscribeResponse]:
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            raise InvalidArgument("open", "the stream ended before an open request") from None
        if isinstance(first, UndecodableRequest):
            raise first
        if first.WhichOneof("request") != "open":
            raise InvalidArgument("open", "the first request must be open")
        settings, options = parse_open(first.open)
        subscription, stream = await self._registry.open_stream(settings, options)
        reader = asyncio.create_task(self._read(request_iterator, subscription, stream))
        # An outbox item read ahead while batching deliveries (or the rest of a batch past the
        # message limit); it goes out next, so ack results keep the order of their requests.
        carry: list[OutboxItem] = []
        try:
            opened = pb.SubscriptionOpened(subscription=settings.name)
            opened.lease_duration.FromNanoseconds(int(options.lease_duration * 1e9))
            yield pb.SubscribeResponse(opened=opened)
            while True:
                yield await self._next_response(stream, reader, carry)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            for item in carry:
                if isinstance(item, LeasedBatch):
                    stream.unread(item)  # never written: no delivery attempt
            self._registry.close_stream(subscription, stream)

    async def _next_response(
        self, stream: Stream, reader: asyncio.Task[None], carry: list[OutboxItem]
    ) -> pb.SubscribeResponse:
        """The next message for the client."""
        item = carry.pop() if carry else await self._next_item(stream, reader)
        if isinstance(item, StreamClosed):
            raise item.error
        if isinstance(item, AckReport):
            response = pb.SubscribeResponse()
            self._fill_results(response.ack_results.results, item.results)
            return response
        # Leased batches queued behind this one go out in the same message, up to the limit.
        response = pb.SubscribeResponse()
        deliveries = response.deliveries.deliveries
        wall_offset = time.time() - self._clock.monotonic()
        count = 0
        while True:
            records = item.records
            room = DELIVERIES_PER_MESSAGE - count
            if len(records) > room:
                carry.append(LeasedBatch(records[room:]))
                records = records[:room]
            for leased in records:
                _add_delivery(deliveries, leased, wall_offset)
            count += len(records)
            if carry or stream.outbox.empty():
                break
            item = stream.outbox.get_nowait()
            if not isinstance(item, LeasedBatch):
                carry.append(item)  # the next message, ahead of anything queued after it
                break
        stream.taken(count)
        return response

    @staticmethod
    async def _next_item(stream: Stream, reader: asyncio.Task[None]) -> OutboxItem:
        if not stream.outbox.empty():
            return stream.outbox.get_nowait()
        getter = asyncio.ensure_future(stream.outbox.get())
        try:
            waiting = {getter} if reader.done() else {getter, reader}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                # The reader ended first: a bad client message ends the stream with its error;
                # a half-close (grpcurl does that) keeps deliveries flowing, acked with unary Ack.
                reader.result()
            return await getter
        finally:
            getter.cancel()  # no-op once done; else no orphan task waits on a closed outbox

    async def _read(
        self,
        requests: AsyncIterator[pb.SubscribeRequest | UndecodableRequest],
        subscription: Subscription,
        stream: Stream,
    ) -> None:
        async for request in requests:
            if isinstance(request, UndecodableRequest):
                raise request
            kind = request.WhichOneof("request")
            if kind == "ack":
                results = subscription.ack(_ack_ids(request.ack.ack_ids, "ack.ack_ids"))
            elif kind == "nack":
                delay = self._nack_delay(request.nack, "nack.redelivery_delay")
                results = subscription.nack(_ack_ids(request.nack.ack_ids, "nack.ack_ids"), delay)
            elif kind == "extend":
                duration = duration_seconds(
                    request.extend.lease_duration, "extend.lease_duration", MIN_LEASE_S, MAX_LEASE_S
                )
                ids = _ack_ids(request.extend.ack_ids, "extend.ack_ids")
                results = subscription.extend(ids, duration)
            elif kind == "open":
                raise InvalidArgument("open", "only the first request may be open")
            else:
                raise InvalidArgument("request", "must set ack, nack or extend")
            stream.report(AckReport(results))

    async def Ack(
        self, request: pb.AckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AckResponse:
        subscription = self._find(request.subscription)
        results = subscription.ack(_ack_ids(request.ack_ids, "ack_ids"))
        response = pb.AckResponse()
        self._fill_results(response.results, results)
        return response

    async def Nack(
        self, request: pb.NackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.NackResponse:
        subscription = self._find(request.subscription)
        delay = self._nack_delay(request, "redelivery_delay")
        results = subscription.nack(_ack_ids(request.ack_ids, "ack_ids"), delay)
        response = pb.NackResponse()
        self._fill_results(response.results, results)
        return response

    async def ExtendLease(
        self, request: pb.ExtendLeaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ExtendLeaseResponse:
        subscription = self._find(request.subscription)
        duration = duration_seconds(
            request.lease_duration, "lease_duration", MIN_LEASE_S, MAX_LEASE_S
        )
        results = subscription.extend(_ack_ids(request.ack_ids, "ack_ids"), duration)
        response = pb.ExtendLeaseResponse()
        self._fill_results(response.results, results)
        return response

    def _find(self, name: str) -> Subscription:
        return self._registry.find(check_subscription(name, "subscription"))

    @staticmethod
    def _nack_delay(request: pb.NackIds | pb.NackRequest, field: str) -> float:
        if not request.HasField("redelivery_delay"):
            return 0.0
        return duration_seconds(request.redelivery_delay, field, 0.0, MAX_NACK_DELAY_S)

    def _fill_results(self, out: Any, results: list[AckResult]) -> None:
        """Append one AckIdResult per result to the repeated field `out`, in order."""
        wall_offset = time.time() - self._clock.monotonic()
        for ack_id, outcome, deadline in results:
            result = out.add(ack_id=ack_id, status=_STATUS[outcome])
            if deadline is not None:
                stamp = result.lease_deadline
                stamp.seconds, stamp.nanos = divmod(int((deadline + wall_offset) * 1e9), 10**9)


def _add_delivery(deliveries: Any, leased: LeasedRecord, wall_offset: float) -> None:
    """Append `leased` to a Deliveries list: a delivery is built field by field in place, which
    costs a fraction of building each message and copying it into its parent."""
    lease, record = leased
    shown = presentation(record)
    delivery = deliveries.add(
        ack_id=lease.ack_id,
        partition=record.partition,
        offset=record.offset,
        delivery_attempt=lease.attempt,
    )
    deadline = delivery.lease_deadline
    deadline.seconds, deadline.nanos = divmod(int((lease.deadline + wall_offset) * 1e9), 10**9)
    event = delivery.event
    event.event_id = shown.event_id
    event.topic = record.topic
    if record.key is not None:
        event.key = record.key
    if record.value is not None:
        event.payload = record.value
    if shown.headers:
        add_header = event.headers.add
        for name, value in shown.headers:
            if value is None:
                add_header(key=name)
            else:
                add_header(key=name, value=value)
    event.published_by_ferry = shown.published_by_ferry
    if record.timestamp_type:
        event.kafka_time_type = record.timestamp_type
        kafka_time = event.kafka_time
        kafka_time.seconds, kafka_time.nanos = divmod(record.timestamp_ms * 1_000_000, 10**9)
    if shown.publish_time_ms:
        publish_time = event.publish_time
        publish_time.seconds, millis = divmod(shown.publish_time_ms, 1000)
        publish_time.nanos = millis * 1_000_000
