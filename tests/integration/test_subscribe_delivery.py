"""Subscribe, fault-free: everything delivered once and committed; lease expiry redelivers;
foreign records; a throughput figure. Real Kafka, real Ferry processes."""

from __future__ import annotations

import time

import pytest

from sidecar._gen.ferry.v1.record_pb2 import TIMESTAMP_TYPE_CREATE_TIME
from testkit.acking_worker import AckingWorker
from testkit.consumer_offsets import end_offsets, wait_committed_to_end
from testkit.ferry_process import Ferries
from testkit.kafka_produce import produce_direct
from testkit.publishing import event_headers, publish_through_ferry
from testkit.stream_client import open_stream
from testkit.subscribe_calls import APPLIED, EXPIRED, group_of, open_request, unique_subscription
from tests.conftest import KafkaHandle

FERRY_ARGS = ("--subscription-linger-s", "1")


def test_five_thousand_events_are_delivered_once_acked_and_committed(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("sub-all", partitions=3)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, 5_000)
    subscription = unique_subscription("all")

    client = open_stream(ferry, open_request(subscription, [topic], lease_s=30))
    worker = AckingWorker(client).start()
    assert client.wait_received(5_000, 60), f"only {client.received_count()} delivered"
    deadline = time.monotonic() + 30
    while len(worker.applied) < 5_000 and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.stop()

    ids = [r.event_id for r in client.received]
    assert sorted(ids) == sorted(published), "each published event delivered exactly once"
    assert {r.attempt for r in client.received} == {1}
    assert all(r.delivery.event.published_by_ferry for r in client.received)
    assert all(r.delivery.event.topic == topic for r in client.received)
    for r in client.received:
        assert r.delivery.event.payload == f"payload-{r.event_id}".encode()
    assert not worker.errors, worker.errors
    assert not client.violations, client.violations
    assert len(worker.statuses) == 5_000
    assert set(worker.statuses) == {APPLIED}
    assert set(worker.applied) == set(published)

    ends = wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    assert sum(ends.values()) == 5_000

    client.cancel()
    assert ferry.terminate() == 0
    ferry.start()
    again = open_stream(ferry, open_request(subscription, [topic], lease_s=30))
    assert again.take(timeout=4) == [], "acked and committed events came back after a restart"
    # The stream is live (not merely unassigned): a new event does arrive, and only it.
    [new_id] = publish_through_ferry(ferry, topic, 1, prefix="after-restart")
    got = again.take(timeout=30)
    assert [r.event_id for r in got] == [new_id]
    assert again.take(timeout=1) == []
    again.cancel()


def test_unacked_events_come_back_after_the_lease_with_a_new_ack_id(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("sub-half", partitions=2)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, 200)
    subscription = unique_subscription("half")
    lease_s = 3.0

    client = open_stream(ferry, open_request(subscription, [topic], lease_s=lease_s))
    assert client.wait_received(200, 30)
    first = client.take(timeout=1, at_least=200)
    assert sorted(r.event_id for r in first) == sorted(published)
    by_event = {r.event_id: r for r in first}
    acked = set(published[0::2])
    left = set(published[1::2])
    results = client.ack(by_event[e].ack_id for e in sorted(acked))
    assert {x.status for x in results} == {APPLIED}

    assert client.wait_received(300, lease_s + 10), "the unacked half was not redelivered"
    again = client.take(timeout=1, at_least=100)
    assert sorted(r.event_id for r in again) == sorted(left)
    for r in again:
        assert r.attempt == 2, r.delivery
        assert r.ack_id != by_event[r.event_id].ack_id
        ended = by_event[r.event_id].lease_deadline
        assert r.wall >= ended - 0.05, f"redelivered {ended - r.wall:.2f}s before the lease ended"

    stale = client.ack(by_event[e].ack_id for e in sorted(left))
    assert {x.status for x in stale} == {EXPIRED}
    fresh = client.ack(r.ack_id for r in again)
    assert {x.status for x in fresh} == {APPLIED}
    assert client.take(timeout=lease_s + 1.5) == [], "an acked event was delivered again"
    assert not client.violations
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    client.cancel()


def test_foreign_records_arrive_byte_for_byte_with_coordinates_as_event_id(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    """Binary, repeated and null headers in Kafka's order; null keys and values (tombstones)
    told apart from empty ones; the record's timestamp and its type."""
    topic = kafka.topic("sub-foreign", partitions=1)
    binary = [
        ("trace", b"abc"),
        ("binary", b"\xff\xfe\x00"),
        ("trace", b"again"),
        ("nothing", None),
        ("empty", b""),
        ("ferry-spoof", b"x"),
    ]
    produce_direct(
        kafka.bootstrap,
        topic,
        [
            (b"k1", b"v1", binary),  # type: ignore[list-item]
            (None, b"v2", None),
            (b"", b"", [("trace", b"def")]),
            (b"k4", None, None),  # a tombstone
        ],
    )
    ferry = ferries.start(*FERRY_ARGS)
    client = open_stream(ferry, open_request(unique_subscription("foreign"), [topic], lease_s=30))
    got = client.take(timeout=30, at_least=4)
    assert len(got) == 4
    got.sort(key=lambda r: r.delivery.offset)
    expected = [
        # Only Ferry's own id and publish-time headers become fields; others pass as they are.
        (b"k1", b"v1", binary),
        (None, b"v2", []),
        (b"", b"", [("trace", b"def")]),
        (b"k4", None, []),
    ]
    for offset, (r, (key, value, headers)) in enumerate(zip(got, expected, strict=True)):
        event = r.delivery.event
        assert r.delivery.offset == offset
        assert event.event_id == f"{topic}/0/{offset}"
        assert not event.published_by_ferry
        assert event.topic == topic
        assert (event.key if event.HasField("key") else None) == key
        assert (event.payload if event.HasField("payload") else None) == value
        assert event_headers(event) == headers
        assert event.kafka_time.ToMilliseconds() > 0
        assert event.kafka_time_type == TIMESTAMP_TYPE_CREATE_TIME
        assert not event.HasField("publish_time")
        assert r.attempt == 1
    assert {x.status for x in client.ack(r.ack_id for r in got)} == {APPLIED}
    client.cancel()


def test_throughput_of_one_stream(
    kafka: KafkaHandle, ferries: Ferries, capsys: pytest.CaptureFixture[str]
) -> None:
    total = 20_000
    topic = kafka.topic("sub-rate", partitions=3)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, total)
    assert sum(end_offsets(kafka.bootstrap, topic).values()) == total
    subscription = unique_subscription("rate")

    started = time.monotonic()
    client = open_stream(
        ferry, open_request(subscription, [topic], lease_s=60, max_outstanding=5_000)
    )
    worker = AckingWorker(client).start()
    deadline = started + 120
    while len(worker.applied) < total and time.monotonic() < deadline:
        worker_errors = list(worker.errors)
        assert not worker_errors, worker_errors
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    worker.stop()
    assert set(worker.applied) == set(published)
    assert not client.violations
    first = min(r.at for r in client.received)
    steady = elapsed - (first - started)
    with capsys.disabled():
        print(
            f"\n[throughput] {total} events delivered+acked on one stream: "
            f"{total / elapsed:,.0f} events/s from open ({elapsed:.2f}s, incl. "
            f"{first - started:.2f}s group join), {total / steady:,.0f} events/s from the "
            f"first delivery ({steady:.2f}s)"
        )
    client.cancel()
