"""The ferry.v1.Subscriber servicer: translates messages to and from the subscription registry.

No dispatching logic lives here: the stream handler opens a stream, pumps
its outbox onto the wire (batching leased records under the message budget),
and feeds acks, nacks and extensions from the client to the subscription. A
malformed request after `open` is answered `rejected` in its place among the
answers; the stream and its leases stay open.

Every message stays under the delivery message budget (default 3 MiB, below
gRPC's default 4 MiB receive limit): a Deliveries message takes records while
their estimated encoded size (`delivery_cost`, an upper bound) fits, one
larger record goes alone; an AckResults message holds at most 10,000 results
of at most `ACK_RESULT_MAX_BYTES` each (ack ids longer than Ferry's are
refused), under `ACK_RESULTS_MAX_BYTES` in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from sidecar._gen.ferry.v1 import subscriber_pb2_grpc
from sidecar.api.access import AccessControl, OpenAccess
from sidecar.api.status import to_failure
from sidecar.api.subscribe_requests import (
    MAX_ACK_IDS,
    MAX_LEASE_S,
    MIN_LEASE_S,
    ack_ids,
    nack_delay,
    parse_open,
)
from sidecar.clock import Clock
from sidecar.errors import FerryError, InvalidArgument, UndecodableRequest
from sidecar.kafka.ports import FetchedRecord
from sidecar.observability.spans import Tracing
from sidecar.subscribe.leases import ACK_ID_LENGTH, AckOutcome
from sidecar.subscribe.records import presentation
from sidecar.subscribe.registry import SubscriptionRegistry
from sidecar.subscribe.stream import (
    AckReport,
    LeasedBatch,
    LeasedRecord,
    OutboxItem,
    Rejected,
    Stream,
    StreamClosed,
)
from sidecar.subscribe.subscription import AckResult, Subscription
from sidecar.validation import check_subscription, duration_seconds

DELIVERIES_PER_MESSAGE = 500
DEFAULT_DELIVERY_MESSAGE_BYTES = 3 * 1024 * 1024

# Encoded bytes of a Delivery beyond its record's key, value and header bytes, at most: every
# field at its widest (tags, length prefixes, varints of any value, the 20-character ack id,
# three Timestamps), plus the topic twice (event.topic, and the "<topic>/<partition>/<offset>"
# event id of a record not published through Ferry; a Ferry event id is a header value, already
# in the record's size) and per header its Header message's tag, length and field tags. Headers
# Ferry leaves out only make it smaller. test_subscribe_api_v1.py checks the bound.
DELIVERY_OVERHEAD = 192
HEADER_OVERHEAD = 16
# The SubscribeResponse and Deliveries tags and length prefixes.
MESSAGE_OVERHEAD = 12
# One AckIdResult at most: its tag and length, the ack id (tag, length, 20 characters), the
# status, and a lease deadline Timestamp with both fields at their widest.
ACK_RESULT_MAX_BYTES = 2 + (2 + ACK_ID_LENGTH) + 2 + (2 + 11 + 6)
ACK_RESULTS_MAX_BYTES = MESSAGE_OVERHEAD + MAX_ACK_IDS * ACK_RESULT_MAX_BYTES

_STATUS = {
    AckOutcome.APPLIED: pb.ACK_ID_STATUS_APPLIED,
    AckOutcome.ALREADY_ACKED: pb.ACK_ID_STATUS_ALREADY_ACKED,
    AckOutcome.EXPIRED: pb.ACK_ID_STATUS_EXPIRED,
    AckOutcome.UNKNOWN: pb.ACK_ID_STATUS_UNKNOWN,
    AckOutcome.REVOKED: pb.ACK_ID_STATUS_REVOKED,
}


def delivery_cost(record: FetchedRecord) -> int:
    """An upper bound of the encoded size of `record`'s Delivery; cheap (no encoding)."""
    return (
        record.size
        + DELIVERY_OVERHEAD
        + 2 * len(record.topic)
        + HEADER_OVERHEAD * len(record.headers)
    )


class SubscriberServicer(subscriber_pb2_grpc.SubscriberServicer):
    """Thin adapter of the Subscriber service onto the registry."""

    def __init__(
        self,
        registry: SubscriptionRegistry,
        clock: Clock,
        *,
        topic_allowlist: frozenset[str] = frozenset(),
        max_message_bytes: int = DEFAULT_DELIVERY_MESSAGE_BYTES,
        access: AccessControl | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._registry = registry
        self._tracing = tracing or Tracing()
        self._access = access or OpenAccess()
        self._clock = clock
        self._allowlist = topic_allowlist
        # What the records of one Deliveries message may add up to (see `delivery_cost`).
        self._delivery_budget = max_message_bytes - MESSAGE_OVERHEAD

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
        settings, options = parse_open(first.open, self._allowlist)
        self._access.caller(context).check_subscription(
            settings.name, settings.topics, settings.dead_letter_topic
        )
        subscription, stream = await self._registry.open_stream(settings, options)
        reader = asyncio.create_task(self._read(request_iterator, subscription, stream))
        # An outbox item read ahead while batching deliveries (or the rest of a batch past the
        # message budget); it goes out next, so answers keep the order of their requests.
        carry: list[OutboxItem] = []
        try:
            opened = pb.SubscriptionOpened(subscription=settings.name)
            opened.lease_duration.FromNanoseconds(int(options.lease_duration * 1e9))
            yield pb.SubscribeResponse(opened=opened)
            tracing = self._tracing if self._tracing.exporting else None
            while True:
                response = await self._next_response(stream, reader, carry)
                if tracing is not None and response.HasField("deliveries"):
                    tracing.delivered(settings.name, response.deliveries.deliveries)
                yield response
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
        if isinstance(item, Rejected):
            return pb.SubscribeResponse(rejected=to_failure(item.error))
        # Leased batches queued behind this one go out in the same message, within the budget.
        response = pb.SubscribeResponse()
        deliveries = response.deliveries.deliveries
        wall_offset = time.time() - self._clock.monotonic()
        budget = self._delivery_budget
        count = used = 0
        # The leases of one dispatch share their deadline: convert it once.
        deadline, stamp = -1.0, (0, 0)
        while True:
            records = item.records
            for i, leased in enumerate(records):
                cost = delivery_cost(leased.record)
                if count and (count >= DELIVERIES_PER_MESSAGE or used + cost > budget):
                    carry.append(LeasedBatch(records[i:]))  # the next message
                    break
                if leased.lease.deadline != deadline:
                    deadline = leased.lease.deadline
                    stamp = _wall_stamp(deadline, wall_offset)
                _add_delivery(deliveries, leased, stamp)
                used += cost
                count += 1
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
                # The reader ended first: a bug in it ends the stream (INTERNAL); a half-close
                # (grpcurl does that) keeps deliveries flowing, acked with unary Ack.
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
            try:
                results = self._apply(request, subscription)
            except FerryError as error:
                stream.report(Rejected(error))
            else:
                stream.report(AckReport(results))

    def _apply(
        self, request: pb.SubscribeRequest | UndecodableRequest, subscription: Subscription
    ) -> list[AckResult]:
        """Carry out one request after `open`; a FerryError refuses that request alone."""
        if isinstance(request, UndecodableRequest):
            raise request
        kind = request.WhichOneof("request")
        if kind == "ack":
            return subscription.ack(ack_ids(request.ack.ack_ids, "ack.ack_ids"))
        if kind == "nack":
            delay = nack_delay(request.nack, "nack.redelivery_delay")
            ids = ack_ids(request.nack.ack_ids, "nack.ack_ids")
            return subscription.nack(ids, delay, dead_letter=request.nack.dead_letter)
        if kind == "extend":
            duration = duration_seconds(
                request.extend.lease_duration, "extend.lease_duration", MIN_LEASE_S, MAX_LEASE_S
            )
            return subscription.extend(ack_ids(request.extend.ack_ids, "extend.ack_ids"), duration)
        if kind == "open":
            raise InvalidArgument("open", "only the first request may be open")
        raise InvalidArgument("request", "must set ack, nack or extend")

    async def Ack(
        self, request: pb.AckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AckResponse:
        subscription = self._find(request.subscription, context)
        results = subscription.ack(ack_ids(request.ack_ids, "ack_ids"))
        response = pb.AckResponse()
        self._fill_results(response.results, results)
        return response

    async def Nack(
        self, request: pb.NackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.NackResponse:
        subscription = self._find(request.subscription, context)
        delay = nack_delay(request, "redelivery_delay")
        ids = ack_ids(request.ack_ids, "ack_ids")
        results = subscription.nack(ids, delay, dead_letter=request.dead_letter)
        response = pb.NackResponse()
        self._fill_results(response.results, results)
        return response

    async def ExtendLease(
        self, request: pb.ExtendLeaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ExtendLeaseResponse:
        subscription = self._find(request.subscription, context)
        duration = duration_seconds(
            request.lease_duration, "lease_duration", MIN_LEASE_S, MAX_LEASE_S
        )
        results = subscription.extend(ack_ids(request.ack_ids, "ack_ids"), duration)
        response = pb.ExtendLeaseResponse()
        self._fill_results(response.results, results)
        return response

    def _find(self, name: str, context: grpc.aio.ServicerContext[Any, Any]) -> Subscription:
        checked = check_subscription(name, "subscription")
        self._access.caller(context).check_settle(checked)
        return self._registry.find(checked)

    def _fill_results(self, out: Any, results: list[AckResult]) -> None:
        """Append one AckIdResult per result to the repeated field `out`, in order."""
        wall_offset = time.time() - self._clock.monotonic()
        for ack_id, outcome, deadline in results:
            result = out.add(ack_id=ack_id, status=_STATUS[outcome])
            if deadline is not None:
                stamp = result.lease_deadline
                stamp.seconds, stamp.nanos = _wall_stamp(deadline, wall_offset)


def _wall_stamp(deadline: float, wall_offset: float) -> tuple[int, int]:
    """A monotonic `deadline` as (seconds, nanos) since the epoch, for a Timestamp field."""
    return divmod(int((deadline + wall_offset) * 1e9), 10**9)


def _add_delivery(deliveries: Any, leased: LeasedRecord, deadline: tuple[int, int]) -> None:
    """Append `leased` to a Deliveries list, its lease ending at `deadline` (seconds, nanos
    since the epoch): a delivery is built field by field in place, which costs a fraction of
    building each message and copying it into its parent."""
    lease, record = leased
    shown = presentation(record)
    delivery = deliveries.add(
        ack_id=lease.ack_id,
        partition=record.partition,
        offset=record.offset,
        delivery_attempt=lease.attempt,
    )
    stamp = delivery.lease_deadline
    stamp.seconds, stamp.nanos = deadline
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
