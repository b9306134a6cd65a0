"""Ack, nack, extend (over the stream and unary) and their per-id results; request validation."""

from __future__ import annotations

import time
from concurrent.futures import Future

import grpc
import pytest

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from testkit.ferry_process import Ferries, FerryProcess
from testkit.grpc_errors import bad_request_fields
from testkit.publishing import publish_through_ferry
from testkit.stream_client import Received, StreamClient, open_stream
from testkit.subscribe_calls import (
    ALREADY_ACKED,
    APPLIED,
    EXPIRED,
    UNKNOWN,
    duration,
    open_request,
    unary_ack,
    unary_extend,
    unary_nack,
    unique_subscription,
)
from tests.conftest import KafkaHandle

FERRY_ARGS = ("--subscription-linger-s", "1")
LEASE_S = 3.0
NACK_DELAY_S = 2.0


def _statuses(results: list[pb.AckIdResult]) -> list[int]:
    return [r.status for r in results]


def _redeliveries(client: StreamClient, event_id: str) -> list[Received]:
    return [r for r in client.received if r.event_id == event_id and r.attempt > 1]


def test_ack_nack_extend_results_over_the_stream_and_unary(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("sub-acks", partitions=1)
    ferry = ferries.start(*FERRY_ARGS)
    ids = publish_through_ferry(ferry, topic, 10, prefix="e")
    subscription = unique_subscription("acks")
    client = open_stream(ferry, open_request(subscription, [topic], lease_s=LEASE_S))
    first = {r.event_id: r for r in client.take(timeout=30, at_least=10)}
    assert sorted(first) == ids
    t0 = min(r.at for r in first.values())
    nack_stream, extend_stream, expire_stream, ack_stream = ids[0], ids[1], ids[2], ids[3]
    nack_unary, extend_unary, expire_unary, ack_unary = ids[4], ids[5], ids[6], ids[7]

    # Acks, double acks and unknown ids, on the stream and unary.
    assert _statuses(client.ack([first[ack_stream].ack_id])) == [APPLIED]
    assert _statuses(client.ack([first[ack_stream].ack_id])) == [ALREADY_ACKED]
    assert unary_ack(ferry, subscription, [first[ack_unary].ack_id]) == [APPLIED]
    assert unary_ack(ferry, subscription, [first[ack_unary].ack_id]) == [ALREADY_ACKED]
    assert _statuses(client.ack(["never-issued"])) == [UNKNOWN]
    assert unary_ack(ferry, subscription, ["never-issued", first[ack_stream].ack_id]) == [
        UNKNOWN,
        ALREADY_ACKED,
    ]
    assert _statuses(client.ack([first[ids[8]].ack_id, first[ids[9]].ack_id])) == [APPLIED] * 2

    # Nacks with a redelivery delay.
    nacked_at = time.monotonic()
    assert _statuses(client.nack([first[nack_stream].ack_id], NACK_DELAY_S)) == [APPLIED]
    assert unary_nack(ferry, subscription, [first[nack_unary].ack_id], NACK_DELAY_S) == [APPLIED]
    # A nacked lease is over: its ack id answers EXPIRED.
    assert _statuses(client.ack([first[nack_stream].ack_id])) == [EXPIRED]
    assert unary_ack(ferry, subscription, [first[nack_unary].ack_id]) == [EXPIRED]

    # Extensions, half-way through the lease, to well past its original end.
    time.sleep(max(0.0, t0 + LEASE_S / 2 - time.monotonic()))
    [extended] = client.extend([first[extend_stream].ack_id], 6.0)
    assert extended.status == APPLIED
    original = first[extend_stream].delivery.lease_deadline.ToNanoseconds()
    assert extended.lease_deadline.ToNanoseconds() > original + 1e9
    [extended_unary] = unary_extend(ferry, subscription, [first[extend_unary].ack_id], 6.0)
    assert extended_unary.status == APPLIED
    assert (
        extended_unary.lease_deadline.ToNanoseconds()
        > first[extend_unary].delivery.lease_deadline.ToNanoseconds() + 1e9
    )

    # Past the original deadline: the unextended leases expired, the extended ones did not.
    time.sleep(max(0.0, t0 + LEASE_S + 0.7 - time.monotonic()))
    assert _statuses(client.ack([first[expire_stream].ack_id])) == [EXPIRED]
    assert unary_ack(ferry, subscription, [first[expire_unary].ack_id]) == [EXPIRED]
    assert not _redeliveries(client, extend_stream)
    assert not _redeliveries(client, extend_unary)
    assert _statuses(client.ack([first[extend_stream].ack_id])) == [APPLIED]
    assert unary_ack(ferry, subscription, [first[extend_unary].ack_id]) == [APPLIED]

    # The nacked and expired events come back once, with attempt 2, a new ack id, and the
    # nacked ones no sooner than the delay.
    back = {nack_stream, nack_unary, expire_stream, expire_unary}
    assert client.wait_received(10 + len(back), 15)
    again = {r.event_id: r for r in client.received[10:]}
    assert set(again) == back
    for event_id, r in again.items():
        assert r.attempt == 2
        assert r.ack_id != first[event_id].ack_id
    for event_id in (nack_stream, nack_unary):
        waited = again[event_id].at - nacked_at
        assert waited >= NACK_DELAY_S, f"{event_id} redelivered {waited:.2f}s after its nack"
    for event_id in (expire_stream, expire_unary):
        assert again[event_id].wall >= first[event_id].lease_deadline - 0.05
    assert _statuses(client.ack([again[nack_stream].ack_id, again[expire_stream].ack_id])) == [
        APPLIED,
        APPLIED,
    ]
    assert unary_ack(ferry, subscription, [again[nack_unary].ack_id]) == [APPLIED]
    assert unary_ack(ferry, subscription, [again[expire_unary].ack_id]) == [APPLIED]

    # Nothing else comes back: every event is settled.
    time.sleep(LEASE_S + 1.0)
    assert len(client.received) == 10 + len(back), [r.event_id for r in client.received[14:]]
    assert not client.violations

    # Unary calls on a subscription that is not open here.
    with pytest.raises(grpc.RpcError) as err:
        unary_ack(ferry, unique_subscription("nowhere"), ["x"])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        unary_nack(ferry, unique_subscription("nowhere"), ["x"])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        unary_extend(ferry, unique_subscription("nowhere"), ["x"], 5.0)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    client.cancel()


def test_stream_ack_results_keep_request_order(kafka: KafkaHandle, ferries: Ferries) -> None:
    """One ack message per delivery while deliveries keep flowing: results come back in order.

    Regression: the servicer used to push an ack report that it read ahead (while batching
    deliveries) to the back of the outbox, so later reports overtook it.
    """
    topic = kafka.topic("sub-order", partitions=3)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, 3_000)
    client = open_stream(
        ferry,
        open_request(unique_subscription("order"), [topic], lease_s=60, max_outstanding=200),
    )
    futures: list[Future[list[pb.AckIdResult]]] = []
    deadline = time.monotonic() + 60
    while len(futures) < len(published) and time.monotonic() < deadline:
        futures.extend(client.ack_async([r.ack_id]) for r in client.take(timeout=1))
    assert len(futures) == len(published)
    assert all(_statuses(f.result(10)) == [APPLIED] for f in futures)
    assert client.violations == []
    client.cancel()


def _stream_error(ferry: FerryProcess, first: pb.SubscribeRequest) -> grpc.RpcError:
    client = StreamClient(ferry.channel(), pb.OpenSubscription()).start(first)
    assert client.wait_closed(15), "the stream was not ended"
    assert client.opened is None
    assert client.error is not None
    return client.error


def _open(**fields: object) -> pb.SubscribeRequest:
    defaults: dict[str, object] = {"subscription": "valid-sub", "topics": ["valid-topic"]}
    return pb.SubscribeRequest(open=pb.OpenSubscription(**{**defaults, **fields}))  # type: ignore[arg-type]


def test_invalid_requests_are_refused_and_ferry_keeps_serving(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("sub-valid", partitions=1)
    other = kafka.topic("sub-valid-other", partitions=1)
    ferry = ferries.start(*FERRY_ARGS)
    subscription = unique_subscription("valid")

    cases: list[tuple[pb.SubscribeRequest, str]] = [
        (pb.SubscribeRequest(ack=pb.AckIds(ack_ids=["x"])), "open"),
        (pb.SubscribeRequest(), "open"),
        (_open(subscription=""), "open.subscription"),
        (_open(subscription="bad name!"), "open.subscription"),
        (_open(subscription="x" * 201), "open.subscription"),
        (_open(topics=[]), "open.topics"),
        (_open(topics=["bad topic"]), "open.topics[0]"),
        (_open(topics=[topic, "__consumer_offsets"]), "open.topics[1]"),
        (_open(topics=[".."]), "open.topics[0]"),
        (_open(lease_duration=duration(0.5)), "open.lease_duration"),
        (_open(lease_duration=duration(660)), "open.lease_duration"),
        (_open(max_delivery_attempts=3), "open.dead_letter_topic"),
        (_open(max_delivery_attempts=1, dead_letter_topic="dlq"), "open.max_delivery_attempts"),
        (_open(topics=["valid-topic", "valid-topic"]), "open.topics[1]"),
        (
            _open(topics=[topic], max_delivery_attempts=3, dead_letter_topic=topic),
            "open.dead_letter_topic",
        ),
        (_open(max_outstanding_events=-1), "open.max_outstanding_events"),
        (_open(max_outstanding_bytes=-5), "open.max_outstanding_bytes"),
        (_open(max_outstanding_bytes=2**30 + 1), "open.max_outstanding_bytes"),
    ]
    for first, field in cases:
        error = _stream_error(ferry, first)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (first, error)
        assert bad_request_fields(error) == [field], (first, error.details())

    # A live stream; a second one with other topics is refused.
    live = open_stream(ferry, open_request(subscription, [topic], lease_s=30))
    conflict = _stream_error(ferry, _open(subscription=subscription, topics=[other]))
    assert conflict.code() == grpc.StatusCode.FAILED_PRECONDITION
    conflict = _stream_error(
        ferry,
        _open(subscription=subscription, topics=[topic], max_delivery_attempts=2,
              dead_letter_topic=other),
    )  # fmt: skip
    assert conflict.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Bad ack id lists, unary (on a stream they are rejected one by one: test_subscribe_v1).
    too_many = [f"id-{i}" for i in range(10_001)]
    for ack_ids, field in ((too_many, "ack_ids"), ([], "ack_ids"), (["x" * 21], "ack_ids[0]")):
        with pytest.raises(grpc.RpcError) as err:
            unary_ack(ferry, subscription, ack_ids)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(err.value) == [field]
    with pytest.raises(grpc.RpcError) as err:
        unary_ack(ferry, "", ["x"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        unary_extend(ferry, subscription, ["x"], 0.5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(err.value) == ["lease_duration"]

    # Ferry still serves: the first stream is alive and gets a new event.
    assert not live.closed.is_set()
    [event_id] = publish_through_ferry(ferry, topic, 1, prefix="still-serving")
    [got] = live.take(timeout=30)
    assert got.event_id == event_id
    assert _statuses(live.ack([got.ack_id])) == [APPLIED]
    live.cancel()
