"""The dispatcher (Subscription) with a fake consumer and a manual clock: no Kafka, no threads."""

from __future__ import annotations

import asyncio

from sidecar.clock import ManualClock
from sidecar.kafka.ports import AssignedPartition, FetchedRecord, fetched_record
from sidecar.subscribe import ackcodec
from sidecar.subscribe.flow_control import Limits
from sidecar.subscribe.leases import AckOutcome, TopicPartition
from sidecar.subscribe.stream import LeasedBatch
from sidecar.subscribe.subscription import Subscription, SubscriptionSettings
from testkit.subscription_fakes import (
    DeadLetterRecorder,
    RecordingConsumer,
    drain,
)
from testkit.subscription_fakes import stream_options as options

TOPIC = "orders"


def record(offset: int, partition: int = 0, headers: tuple = ()) -> FetchedRecord:
    return fetched_record(TOPIC, partition, offset, b"k", b"v%d" % offset, headers, 0)


def make(
    attempts: int = 0, dlq: str = "", limits: Limits | None = None
) -> tuple[Subscription, RecordingConsumer, ManualClock, DeadLetterRecorder]:
    clock = ManualClock()
    dead = DeadLetterRecorder()
    sub = Subscription(
        SubscriptionSettings("s", (TOPIC,), attempts, dlq, False), clock, dead, limits
    )
    consumer = RecordingConsumer()
    sub.attach(consumer)
    sub.on_assigned([AssignedPartition(TOPIC, 0, None, ""), AssignedPartition(TOPIC, 1, None, "")])
    return sub, consumer, clock, dead


def committed(consumer: RecordingConsumer) -> dict[TopicPartition, int]:
    last: dict[TopicPartition, int] = {}
    for batch in consumer.commits:
        for c in batch:
            last[(c.topic, c.partition)] = c.offset
    return last


async def test_acked_prefix_is_committed_never_past_an_unacked_record() -> None:
    sub, consumer, clock, _ = make()
    stream = sub.open_stream(options())
    sub.on_records([record(o) for o in range(5)])
    leased = {x.record.offset: x.lease.ack_id for x in drain(stream)}
    assert sub.ack([leased[0], leased[1], leased[3]]) == [
        (leased[0], AckOutcome.APPLIED, None),
        (leased[1], AckOutcome.APPLIED, None),
        (leased[3], AckOutcome.APPLIED, None),
    ]
    clock.advance(1)
    sub.tick()
    assert committed(consumer)[(TOPIC, 0)] == 2
    metadata = consumer.commits[-1][0].metadata
    assert ackcodec.decode(metadata, 2) == {3}


async def test_streams_share_records_and_respect_their_limits() -> None:
    sub, _, _, _ = make()
    a, b = sub.open_stream(options(max_events=3)), sub.open_stream(options(max_events=3))
    sub.on_records([record(o) for o in range(10)])
    got_a, got_b = drain(a), drain(b)
    assert len(got_a) == 3
    assert len(got_b) == 3
    offsets = [x.record.offset for x in got_a + got_b]
    assert sorted(offsets) == list(range(6))  # each record leased to one stream only


async def test_expired_lease_is_redelivered_with_the_next_attempt() -> None:
    sub, _, clock, _ = make()
    stream = sub.open_stream(options(lease=2.0))
    sub.on_records([record(0)])
    [first] = drain(stream)
    clock.advance(2.0)
    sub.tick()
    clock.advance(1.0)  # past the redelivery backoff
    sub.tick()
    [again] = drain(stream)
    assert again.record.offset == 0
    assert again.lease.attempt == 2
    assert again.lease.ack_id != first.lease.ack_id
    assert sub.ack([first.lease.ack_id])[0][1] is AckOutcome.EXPIRED


async def test_closed_stream_counts_an_attempt_only_for_records_the_client_saw() -> None:
    sub, _, _, _ = make()
    seen = sub.open_stream(options(max_events=1))
    unseen = sub.open_stream(options(max_events=1))
    sub.on_records([record(0), record(1)])
    drain(seen)  # the client of `seen` received its record; `unseen` never wrote its one out
    sub.close_stream(seen)
    sub.close_stream(unseen)
    fresh = sub.open_stream(options())
    attempts = {x.record.offset: x.lease.attempt for x in drain(fresh)}
    assert sorted(attempts.values()) == [1, 2]


async def test_poison_record_goes_to_the_dead_letter_topic_and_then_counts_as_acked() -> None:
    sub, consumer, clock, dead = make(attempts=2, dlq="orders.dlq")
    stream = sub.open_stream(options())
    sub.on_records([record(0)])
    for _ in range(2):
        [leased] = drain(stream)
        sub.nack([leased.lease.ack_id], delay=0.0)
    for _ in range(5):  # let the dead-letter write task run
        await asyncio.sleep(0)
    assert [e.topic for e in dead.written] == ["orders.dlq"]
    headers = dict(dead.written[0].headers)
    assert headers["ferry-dead-letter-original-offset"] == b"0"
    assert headers["ferry-dead-letter-delivery-attempts"] == b"2"
    clock.advance(1)
    sub.tick()
    assert committed(consumer)[(TOPIC, 0)] == 1
    assert drain(stream) == []


async def test_records_are_held_back_when_too_much_is_held_and_taken_again_when_drained() -> None:
    sub, consumer, _, _ = make(limits=Limits(max_held_records=10))
    stream = sub.open_stream(options(max_events=2))
    sub.on_records([record(o) for o in range(10)])
    assert consumer.holding
    assert sub.status()["paused"] == 1
    for _ in range(2):
        sub.ack([x.lease.ack_id for x in drain(stream)])
    assert consumer.holding  # 6 held: more than half of the bound
    sub.ack([x.lease.ack_id for x in drain(stream)])
    assert not consumer.holding
    assert sub.status()["paused"] == 0


async def test_revoke_drops_leases_and_commits_only_the_acked_prefix() -> None:
    sub, _, _, _ = make()
    stream = sub.open_stream(options())
    sub.on_records([record(0), record(1), record(0, partition=1)])
    leased = {(x.record.partition, x.record.offset): x.lease.ack_id for x in drain(stream)}
    sub.ack([leased[(0, 0)]])
    commits = await sub.on_revoked([(TOPIC, 0)], lost=False)
    assert [(c.partition, c.offset) for c in commits] == [(0, 1)]
    assert sub.ack([leased[(0, 1)]])[0][1] is AckOutcome.REVOKED
    assert sub.ack([leased[(1, 0)]])[0][1] is AckOutcome.APPLIED


async def test_restored_sparse_acks_are_not_delivered_again() -> None:
    clock = ManualClock()
    sub = Subscription(
        SubscriptionSettings("s", (TOPIC,), 0, "", False), clock, DeadLetterRecorder()
    )
    sub.attach(RecordingConsumer())
    sub.on_assigned([AssignedPartition(TOPIC, 0, 5, ackcodec.encode({6, 8}, 5))])
    stream = sub.open_stream(options())
    sub.on_records([record(o) for o in range(5, 10)])
    assert [x.record.offset for x in drain(stream)] == [5, 7, 9]


async def test_records_granted_together_reach_the_stream_as_one_batch() -> None:
    sub, _, _, _ = make()
    stream = sub.open_stream(options(max_events=4))
    sub.on_records([record(o) for o in range(6)])
    batch = stream.outbox.get_nowait()
    assert isinstance(batch, LeasedBatch)
    assert [x.record.offset for x in batch.records] == [0, 1, 2, 3]
    assert stream.outbox.empty()
    stream.taken(4)
    sub.ack([x.lease.ack_id for x in batch.records[:2]])
    [more] = [stream.outbox.get_nowait()]
    assert isinstance(more, LeasedBatch)
    assert [x.record.offset for x in more.records] == [4, 5]


async def test_the_consumer_is_told_whether_subscribers_wait() -> None:
    sub, consumer, _, _ = make()
    a = sub.open_stream(options())
    b = sub.open_stream(options())
    sub.close_stream(a)
    assert consumer.wanted == [True]
    sub.close_stream(b)
    sub.close_stream(b)  # closing twice says nothing new
    assert consumer.wanted == [True, False]
    sub.on_consumer_replaced()
    assert sub.status()["consumer_replaced_total"] == 1


async def test_a_batch_read_but_never_written_costs_no_attempt() -> None:
    sub, _, clock, _ = make()
    first = sub.open_stream(options())
    sub.on_records([record(o) for o in range(3)])
    batch = first.outbox.get_nowait()
    assert isinstance(batch, LeasedBatch)
    first.unread(LeasedBatch(batch.records[1:]))  # the servicer wrote only the first one
    first.taken(1)
    sub.close_stream(first)
    second = sub.open_stream(options())
    clock.advance(1.0)
    sub.tick()
    attempts = {x.record.offset: x.lease.attempt for x in drain(second)}
    assert attempts == {0: 2, 1: 1, 2: 1}
