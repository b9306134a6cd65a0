"""The Subscriber servicer without a network: open validation, ack id bounds, message budgets,
refused stream requests, and the registry's subscription cap and settings conflicts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf import duration_pb2

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from sidecar.api.status import to_failure
from sidecar.api.subscribe_requests import MAX_ACK_IDS, ack_ids, parse_open
from sidecar.api.subscriber import (
    ACK_RESULTS_MAX_BYTES,
    DEFAULT_DELIVERY_MESSAGE_BYTES,
    SubscriberServicer,
    delivery_cost,
)
from sidecar.clock import ManualClock
from sidecar.config import KIB, Settings
from sidecar.errors import (
    InvalidArgument,
    NoDeadLetterTopic,
    SettingsConflict,
    TooManySubscriptions,
    TopicNotAllowed,
    UndecodableRequest,
)
from sidecar.kafka.ports import fetched_record
from sidecar.subscribe.leases import ACK_ID_LENGTH, AckIdSource, AckOutcome, DeliveryKey, Lease
from sidecar.subscribe.registry import SubscriptionRegistry
from sidecar.subscribe.stream import (
    AckReport,
    LeasedBatch,
    LeasedRecord,
    Rejected,
    Stream,
    StreamOptions,
)
from sidecar.subscribe.subscription import Subscription, SubscriptionSettings
from testkit.subscription_fakes import IdleConsumer

MIB = 1024 * 1024


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def open_message(**fields: Any) -> pb.OpenSubscription:
    return pb.OpenSubscription(**{"subscription": "s", "topics": ["a"], **fields})


# -- OpenSubscription -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"topics": ["a", "b", "a"]}, "open.topics[2]"),
        ({"max_outstanding_bytes": 1024 * MIB + 1}, "open.max_outstanding_bytes"),
        ({"max_outstanding_bytes": -1}, "open.max_outstanding_bytes"),
        ({"max_delivery_attempts": 3}, "open.dead_letter_topic"),
        ({"dead_letter_topic": "a"}, "open.dead_letter_topic"),
        ({"delivery_order": 7}, "open.delivery_order"),
        ({"min_redelivery_backoff": duration(3601)}, "open.min_redelivery_backoff"),
        ({"max_redelivery_backoff": duration(-1)}, "open.max_redelivery_backoff"),
        ({"min_redelivery_backoff": duration(11)}, "open.min_redelivery_backoff"),
        (
            {"min_redelivery_backoff": duration(3), "max_redelivery_backoff": duration(2)},
            "open.min_redelivery_backoff",
        ),
    ],
)
def test_open_refuses(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_open(open_message(**fields))
    assert caught.value.field == field


def test_open_accepts_the_v1_settings() -> None:
    settings, options = parse_open(
        open_message(
            topics=["b", "a"],
            max_outstanding_bytes=1024 * MIB,
            dead_letter_topic="dlq",  # dead letters by nack only
            delivery_order=pb.DELIVERY_ORDER_PER_KEY,
            min_redelivery_backoff=duration(0),
            max_redelivery_backoff=duration(3600),
        )
    )
    assert settings.topics == ("a", "b")
    assert settings.max_delivery_attempts == 0
    assert settings.dead_letter_topic == "dlq"
    assert settings.per_key_order
    assert (settings.min_redelivery_backoff, settings.max_redelivery_backoff) == (0.0, 3600.0)
    assert options.max_outstanding_bytes == 1024 * MIB
    defaults, _ = parse_open(open_message(delivery_order=pb.DELIVERY_ORDER_UNORDERED))
    assert not defaults.per_key_order
    assert (defaults.min_redelivery_backoff, defaults.max_redelivery_backoff) == (0.1, 10.0)
    assert defaults == parse_open(open_message())[0]  # unspecified order is unordered


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"topics": ["a", "secret"]}, "open.topics[1]"),
        ({"dead_letter_topic": "secret"}, "open.dead_letter_topic"),
    ],
)
def test_the_allow_list_covers_subscribed_and_dead_letter_topics(
    fields: dict[str, Any], field: str
) -> None:
    allowed = frozenset({"a", "dlq"})
    with pytest.raises(TopicNotAllowed) as caught:
        parse_open(open_message(**fields), allowed)
    assert caught.value.field == field
    parse_open(open_message(dead_letter_topic="dlq", max_delivery_attempts=2), allowed)


def test_ack_ids_longer_than_ferrys_are_refused() -> None:
    ours = AckIdSource()()
    assert len(ours) == ACK_ID_LENGTH
    assert ack_ids([ours, "short"], "ack.ack_ids") == [ours, "short"]
    with pytest.raises(InvalidArgument) as caught:
        ack_ids([ours, ours + "x"], "ack.ack_ids")
    assert caught.value.field == "ack.ack_ids[1]"
    with pytest.raises(InvalidArgument):
        ack_ids([ours] * (MAX_ACK_IDS + 1), "ack_ids")


# -- message budgets ----------------------------------------------------------------------------


def test_delivery_cost_bounds_the_encoded_delivery() -> None:
    """Every field at its widest: the estimate must never be below the real size."""
    topic = "t" * 249
    headers = tuple((f"h{i}" * 40, b"\xff" * 300) for i in range(64))
    for record in [
        fetched_record(topic, 2**31 - 1, 2**63 - 1, b"k" * 500, b"v" * 1000, headers, 2**62),
        fetched_record("t", 0, 0, None, None),
        fetched_record(topic, 7, 12345, None, b"", ()),
    ]:
        delivery = pb.Delivery(
            ack_id="a" * ACK_ID_LENGTH,
            partition=record.partition,
            offset=record.offset,
            delivery_attempt=2**31 - 1,
        )
        delivery.lease_deadline.FromSeconds(253402300799)  # 9999-12-31
        delivery.lease_deadline.nanos = 999_999_999
        event = delivery.event
        event.event_id = f"{record.topic}/{record.partition}/{record.offset}"
        event.topic = record.topic
        event.key = record.key or b""
        event.payload = record.value or b""
        for name, value in record.headers:
            event.headers.add(key=name, value=value or b"")
        event.published_by_ferry = True
        event.kafka_time_type = 2
        for stamp in (event.kafka_time, event.publish_time):
            stamp.seconds, stamp.nanos = 253402300799, 999_999_999
        wrapped = pb.Deliveries(deliveries=[delivery]).ByteSize()
        assert wrapped <= delivery_cost(record), (wrapped, delivery_cost(record))


def test_an_ack_results_message_is_bounded() -> None:
    response = pb.SubscribeResponse()
    for _ in range(MAX_ACK_IDS):
        result = response.ack_results.results.add(
            ack_id="a" * ACK_ID_LENGTH, status=pb.ACK_ID_STATUS_REVOKED
        )
        result.lease_deadline.seconds, result.lease_deadline.nanos = 253402300799, 999_999_999
    assert response.ByteSize() <= ACK_RESULTS_MAX_BYTES <= 440 * KIB
    assert Settings.model_fields["max_delivery_message_bytes"].metadata[0].ge >= (
        ACK_RESULTS_MAX_BYTES
    )


def _leased(offset: int, size: int) -> LeasedRecord:
    record = fetched_record("big", 0, offset, b"key", b"x" * size)
    lease = Lease(f"ack{offset:017d}", DeliveryKey("big", 0, offset), 1, 1, 100.0)
    return LeasedRecord(lease, record)


def _servicer(budget: int = DEFAULT_DELIVERY_MESSAGE_BYTES) -> SubscriberServicer:
    async def no_dead_letters(events: Any) -> Any:
        return []

    registry = SubscriptionRegistry(
        lambda s, sink: None,  # type: ignore[arg-type,return-value]
        no_dead_letters,
        ManualClock(),
        max_streams=10,
        linger_s=1.0,
    )
    return SubscriberServicer(registry, ManualClock(), max_message_bytes=budget)


async def _responses(servicer: SubscriberServicer, stream: Stream) -> list[pb.SubscribeResponse]:
    reader: asyncio.Task[None] = asyncio.create_task(asyncio.sleep(3600))
    carry: list[Any] = []
    out = []
    try:
        while carry or not stream.outbox.empty():
            out.append(await servicer._next_response(stream, reader, carry))
    finally:
        reader.cancel()
    return out


async def test_deliveries_stay_under_the_budget_and_a_larger_record_goes_alone() -> None:
    servicer = _servicer()
    stream = Stream(1, StreamOptions(30.0, 100, 1 << 30))
    stream.outbox.put_nowait(LeasedBatch([_leased(o, 900 * KIB) for o in range(5)]))
    stream.outbox.put_nowait(LeasedBatch([_leased(o, 900 * KIB) for o in range(5, 10)]))
    stream.outbox.put_nowait(AckReport([("x", AckOutcome.APPLIED, None)]))
    stream.outbox.put_nowait(LeasedBatch([_leased(10, 4 * MIB), _leased(11, 10)]))
    stream.unsent = 12
    responses = await _responses(servicer, stream)
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds == ["deliveries"] * 4 + ["ack_results"] + ["deliveries"] * 2
    sizes = [r.ByteSize() for r in responses]
    assert all(s < 3 * MIB for s in sizes[:5]), sizes
    counts = [len(r.deliveries.deliveries) for r in responses]
    assert counts == [3, 3, 3, 1, 0, 1, 1]
    delivered = [d.offset for r in responses for d in r.deliveries.deliveries]
    assert delivered == list(range(12))
    assert stream.unsent == 0


async def test_many_small_records_fill_one_message_up_to_the_count_limit() -> None:
    servicer = _servicer()
    stream = Stream(1, StreamOptions(30.0, 2000, 1 << 30))
    stream.outbox.put_nowait(LeasedBatch([_leased(o, 10) for o in range(1200)]))
    counts = [len(r.deliveries.deliveries) for r in await _responses(servicer, stream)]
    assert counts == [500, 500, 200]


# -- refused stream requests ----------------------------------------------------------------


class _Sub:
    """What `_apply` needs of a subscription, recording calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def ack(self, ids: list[str]) -> list[Any]:
        self.calls.append(("ack", ids))
        return []

    def nack(self, ids: list[str], delay: float | None, *, dead_letter: bool) -> list[Any]:
        if dead_letter:
            raise NoDeadLetterTopic("no dead-letter topic")
        self.calls.append(("nack", ids, delay))
        return []

    def extend(self, ids: list[str], duration: float) -> list[Any]:
        return []


async def test_bad_requests_are_rejected_in_order_and_the_stream_reads_on() -> None:
    servicer = _servicer()
    stream = Stream(1, StreamOptions(30.0, 100, 1 << 20))
    sub = _Sub()
    requests: list[pb.SubscribeRequest | UndecodableRequest] = [
        pb.SubscribeRequest(),
        UndecodableRequest("ferry.v1.SubscribeRequest"),
        pb.SubscribeRequest(open=open_message()),
        pb.SubscribeRequest(ack=pb.AckIds(ack_ids=["a"])),
        pb.SubscribeRequest(ack=pb.AckIds()),
        pb.SubscribeRequest(ack=pb.AckIds(ack_ids=["x" * 21])),
        pb.SubscribeRequest(nack=pb.NackIds(ack_ids=["a"], dead_letter=True)),
        pb.SubscribeRequest(nack=pb.NackIds(ack_ids=["a"], redelivery_delay=duration(-1))),
        pb.SubscribeRequest(extend=pb.ExtendIds(ack_ids=["a"])),
        pb.SubscribeRequest(nack=pb.NackIds(ack_ids=["b"])),
    ]

    async def feed() -> AsyncIterator[pb.SubscribeRequest | UndecodableRequest]:
        for request in requests:
            yield request

    await servicer._read(feed(), sub, stream)  # type: ignore[arg-type]
    answers = []
    while not stream.outbox.empty():
        item = stream.outbox.get_nowait()
        answers.append(
            to_failure(item.error).reason if isinstance(item, Rejected) else type(item).__name__
        )
    assert answers == [
        "FIELD_INVALID",
        "REQUEST_UNDECODABLE",
        "FIELD_INVALID",
        "AckReport",
        "FIELD_INVALID",
        "FIELD_INVALID",
        "NO_DEAD_LETTER_TOPIC",
        "FIELD_INVALID",
        "FIELD_INVALID",
        "AckReport",
    ]
    assert sub.calls == [("ack", ["a"]), ("nack", ["b"], None)]  # unset delay: the backoff


async def test_a_rejected_answer_is_a_failure_message() -> None:
    servicer = _servicer()
    stream = Stream(1, StreamOptions(30.0, 100, 1 << 20))
    stream.report(Rejected(InvalidArgument("ack.ack_ids", "must hold 1-10000 ack ids")))
    [response] = await _responses(servicer, stream)
    assert response.rejected.reason == "FIELD_INVALID"
    assert response.rejected.field == "ack.ack_ids"
    assert response.rejected.code == 3  # INVALID_ARGUMENT


# -- the registry -------------------------------------------------------------------------------


def _registry(max_subscriptions: int) -> SubscriptionRegistry:
    async def no_dead_letters(events: Any) -> Any:
        return []

    def factory(settings: SubscriptionSettings, sink: Subscription) -> IdleConsumer:
        return IdleConsumer()

    return SubscriptionRegistry(
        factory, no_dead_letters, ManualClock(), max_streams=100, linger_s=60.0,
        max_subscriptions=max_subscriptions,
    )  # fmt: skip


async def test_the_subscription_cap_counts_subscriptions_not_streams() -> None:
    registry = _registry(2)
    options = StreamOptions(30.0, 100, 1 << 20)
    one = SubscriptionSettings("one", ("a",), 0, "", False)
    two = SubscriptionSettings("two", ("a",), 0, "", False)
    try:
        await registry.open_stream(one, options)
        await registry.open_stream(one, options)
        sub, stream = await registry.open_stream(two, options)
        with pytest.raises(TooManySubscriptions) as caught:
            await registry.open_stream(SubscriptionSettings("three", ("a",), 0, "", False), options)
        assert caught.value.retry_after > 0
        registry.close_stream(sub, stream)  # "two" lingers: still a consumer, still counted
        with pytest.raises(TooManySubscriptions):
            await registry.open_stream(SubscriptionSettings("three", ("a",), 0, "", False), options)
        await registry.open_stream(two, options)  # an open one takes more streams
    finally:
        await registry.shutdown()


async def test_a_settings_conflict_does_not_echo_the_open_settings() -> None:
    registry = _registry(10)
    options = StreamOptions(30.0, 100, 1 << 20)
    first = SubscriptionSettings("shared", ("orders-secret",), 3, "dlq-secret", False)
    try:
        await registry.open_stream(first, options)
        for other in [
            SubscriptionSettings("shared", ("orders-secret",), 3, "dlq-secret", False, True),
            SubscriptionSettings("shared", ("orders-secret",), 3, "dlq-secret", False, False, 1.0),
            SubscriptionSettings("shared", ("x",), 0, "", False),
        ]:
            with pytest.raises(SettingsConflict) as caught:
                await registry.open_stream(other, options)
            text = str(caught.value)
            assert "secret" not in text, text
            assert "orders" not in text, text
    finally:
        await registry.shutdown()
