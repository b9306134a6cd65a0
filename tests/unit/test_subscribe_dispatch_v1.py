"""The dispatcher's per-subscription settings: per-key order, redelivery backoff, and the
dead-letter nack; with a fake consumer and a manual clock (no Kafka, no threads)."""

from __future__ import annotations

import random

import pytest

from sidecar.clock import ManualClock
from sidecar.errors import NoDeadLetterTopic
from sidecar.kafka.ports import AssignedPartition, FetchedRecord, fetched_record
from sidecar.subscribe.leases import AckOutcome, DeliveryKey, TopicPartition
from sidecar.subscribe.ordering import KeyOrder
from sidecar.subscribe.redelivery import JITTER, redelivery_backoff
from sidecar.subscribe.stream import LeasedRecord
from sidecar.subscribe.subscription import Subscription, SubscriptionSettings
from testkit.subscription_fakes import (
    DeadLetterRecorder,
    RecordingConsumer,
    drain,
)
from testkit.subscription_fakes import stream_options as options

TOPIC = "orders"


def rec(offset: int, key: bytes | None, partition: int = 0) -> FetchedRecord:
    return fetched_record(TOPIC, partition, offset, key, b"v%d" % offset)


def make(
    *,
    per_key: bool = False,
    dlq: str = "",
    attempts: int = 0,
    backoff: tuple[float, float] = (0.1, 10.0),
) -> tuple[Subscription, RecordingConsumer, ManualClock, DeadLetterRecorder]:
    clock = ManualClock()
    dead = DeadLetterRecorder()
    settings = SubscriptionSettings(
        "s",
        (TOPIC,),
        attempts,
        dlq,
        False,
        per_key_order=per_key,
        min_redelivery_backoff=backoff[0],
        max_redelivery_backoff=backoff[1],
    )
    sub = Subscription(settings, clock, dead)
    consumer = RecordingConsumer()
    sub.attach(consumer)
    sub.on_assigned([AssignedPartition(TOPIC, p, None, "") for p in (0, 1)])
    return sub, consumer, clock, dead


def offsets(leased: list[LeasedRecord]) -> list[tuple[int, int]]:
    return [(x.record.partition, x.record.offset) for x in leased]


def committed(consumer: RecordingConsumer) -> dict[TopicPartition, int]:
    last: dict[TopicPartition, int] = {}
    for batch in consumer.commits:
        for c in batch:
            last[(c.topic, c.partition)] = c.offset
    return last


# -- KeyOrder ----------------------------------------------------------------------------------


def test_key_order_lets_one_record_per_key_through_and_the_next_on_settle() -> None:
    order = KeyOrder()
    a, b = (TOPIC, 0, b"a"), (TOPIC, 0, b"b")
    keys = [DeliveryKey(TOPIC, 0, o) for o in range(4)]
    assert order.admit(a, keys[0])
    assert order.admit(b, keys[1])
    assert not order.admit(a, keys[2])
    assert not order.admit(a, keys[3])
    assert len(order) == 2
    assert order.settle(b) is None
    assert not order.busy(b)
    assert order.settle(a) == keys[2]
    assert order.busy(a)
    assert order.settle(a) == keys[3]
    assert order.settle(a) is None
    assert not order.busy(a)
    assert len(order) == 0


def test_key_order_forgets_revoked_partitions() -> None:
    order = KeyOrder()
    order.admit((TOPIC, 0, None), DeliveryKey(TOPIC, 0, 0))
    order.admit((TOPIC, 0, None), DeliveryKey(TOPIC, 0, 1))
    order.admit((TOPIC, 1, None), DeliveryKey(TOPIC, 1, 0))
    order.drop_partitions([(TOPIC, 0)])
    assert len(order) == 0
    assert not order.busy((TOPIC, 0, None))
    assert order.busy((TOPIC, 1, None))


# -- per-key order in the dispatcher ----------------------------------------------------------


async def test_per_key_leases_one_record_per_key_and_partition() -> None:
    sub, _, _, _ = make(per_key=True)
    stream = sub.open_stream(options())
    sub.on_records(
        [rec(0, b"a"), rec(1, b"b"), rec(2, b"a"), rec(3, None), rec(4, None), rec(0, b"a", 1)]
    )
    # a@0, b@1 and null@3 on partition 0; a@0 of partition 1 is another key.
    assert offsets(drain(stream)) == [(0, 0), (0, 1), (0, 3), (1, 0)]
    assert sub.status()["waiting_for_key"] == 2


async def test_per_key_redelivery_comes_before_newer_records_of_its_key() -> None:
    sub, _, clock, _ = make(per_key=True)
    stream = sub.open_stream(options(lease=5.0))
    sub.on_records([rec(o, b"k") for o in range(3)])
    [first] = drain(stream)
    assert first.record.offset == 0
    sub.nack([first.lease.ack_id], 0.0)  # redeliver at once
    [again] = drain(stream)
    assert (again.record.offset, again.lease.attempt) == (0, 2)
    clock.advance(6)  # the lease expires: still offset 0, never 1
    sub.tick()
    clock.advance(1)
    sub.tick()
    [third] = drain(stream)
    assert (third.record.offset, third.lease.attempt) == (0, 3)
    sub.close_stream(stream)  # a closed stream returns it: still offset 0 next
    other = sub.open_stream(options())
    [fourth] = drain(other)
    assert fourth.record.offset == 0
    assert sub.ack([fourth.lease.ack_id])[0][1] is AckOutcome.APPLIED
    [second] = drain(other)
    assert second.record.offset == 1
    sub.ack([second.lease.ack_id])
    assert [x.record.offset for x in drain(other)] == [2]


async def test_per_key_dead_letter_frees_the_key_only_once_written() -> None:
    sub, _, _, dead = make(per_key=True, dlq="dlq")
    stream = sub.open_stream(options())
    sub.on_records([rec(0, b"k"), rec(1, b"k")])
    [first] = drain(stream)
    sub.nack([first.lease.ack_id], dead_letter=True)
    assert drain(stream) == []  # offset 1 waits until the dead letter is written
    await _settled()
    assert [e.topic for e in dead.written] == ["dlq"]
    [second] = drain(stream)
    assert second.record.offset == 1


async def test_per_key_revoke_forgets_waiting_records() -> None:
    sub, _, _, _ = make(per_key=True)
    stream = sub.open_stream(options())
    sub.on_records([rec(0, b"k"), rec(1, b"k")])
    [first] = drain(stream)
    await sub.on_revoked([(TOPIC, 0)], lost=False)
    assert sub.status()["waiting_for_key"] == 0
    sub.on_assigned([AssignedPartition(TOPIC, 0, None, "")])
    sub.on_records([rec(0, b"k"), rec(1, b"k")])  # fetched again by the new owner
    assert offsets(drain(stream)) == [(0, 0)]
    assert sub.ack([first.lease.ack_id])[0][1] is AckOutcome.REVOKED


async def test_unordered_leases_every_key_at_once() -> None:
    sub, _, _, _ = make()
    stream = sub.open_stream(options())
    sub.on_records([rec(o, b"k") for o in range(4)])
    assert [x.record.offset for x in drain(stream)] == [0, 1, 2, 3]
    assert sub.status()["waiting_for_key"] == 0


# -- redelivery backoff -------------------------------------------------------------------------


def test_backoff_doubles_from_min_to_max_and_jitter_only_adds() -> None:
    rng = random.Random(7)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (30, 3.0), (1000, 3.0)]:
        for _ in range(50):
            delay = redelivery_backoff(attempt, 0.5, 3.0, rng)
            assert base <= delay <= min(3.0, base * (1 + JITTER))
    assert redelivery_backoff(5, 0.0, 10.0) == 0.0
    assert redelivery_backoff(1, 2.0, 2.0) == 2.0
    assert redelivery_backoff(3, 0.0, 0.0) == 0.0


async def test_a_nack_without_delay_waits_the_subscriptions_backoff() -> None:
    sub, _, clock, _ = make(backoff=(2.0, 2.0))
    stream = sub.open_stream(options())
    sub.on_records([rec(0, b"k")])
    [first] = drain(stream)
    sub.nack([first.lease.ack_id])
    clock.advance(1.99)
    sub.tick()
    assert drain(stream) == []
    clock.advance(0.01)
    sub.tick()
    [again] = drain(stream)
    assert again.lease.attempt == 2
    # An explicit delay wins over the backoff.
    sub.nack([again.lease.ack_id], 0.5)
    clock.advance(0.5)
    sub.tick()
    assert [x.lease.attempt for x in drain(stream)] == [3]


async def test_an_expired_lease_waits_the_backoff_doubling_per_attempt() -> None:
    sub, _, clock, _ = make(backoff=(1.0, 1.5))
    stream = sub.open_stream(options(lease=1.0))
    sub.on_records([rec(0, b"k")])
    assert len(drain(stream)) == 1
    clock.advance(1.0)  # the lease expires: attempt 1 failed, wait 1 s (+ jitter up to 0.2)
    sub.tick()
    clock.advance(0.99)
    sub.tick()
    assert drain(stream) == []
    clock.advance(0.21)
    sub.tick()
    assert [x.lease.attempt for x in drain(stream)] == [2]
    clock.advance(1.0)  # attempt 2 failed: 2 s, capped at 1.5 s exactly
    sub.tick()
    clock.advance(1.49)
    sub.tick()
    assert drain(stream) == []
    clock.advance(0.01)
    sub.tick()
    assert [x.lease.attempt for x in drain(stream)] == [3]


async def test_a_closed_stream_returns_its_leases_at_once() -> None:
    sub, _, _, _ = make(backoff=(60.0, 60.0))
    stream = sub.open_stream(options())
    sub.on_records([rec(0, b"k")])
    assert len(drain(stream)) == 1
    sub.close_stream(stream)
    assert [x.lease.attempt for x in drain(sub.open_stream(options()))] == [2]


# -- the dead-letter nack -----------------------------------------------------------------------


async def _settled() -> None:
    import asyncio

    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_dead_letter_nack_writes_the_record_and_counts_it_acked() -> None:
    sub, consumer, clock, dead = make(dlq="dlq")
    stream = sub.open_stream(options())
    sub.on_records([rec(0, b"k"), rec(1, b"j")])
    first, second = drain(stream)
    assert sub.nack([first.lease.ack_id], dead_letter=True) == [
        (first.lease.ack_id, AckOutcome.APPLIED, None)
    ]
    assert sub.ack([first.lease.ack_id])[0][1] is AckOutcome.EXPIRED  # its lease is over
    await _settled()
    [letter] = dead.written
    headers = dict(letter.headers)
    assert letter.topic == "dlq"
    assert headers["ferry-dead-letter-reason"] == b"dead-lettered by subscriber"
    assert headers["ferry-dead-letter-delivery-attempts"] == b"1"
    assert headers["ferry-dead-letter-original-offset"] == b"0"
    sub.ack([second.lease.ack_id])
    clock.advance(1)
    sub.tick()
    assert committed(consumer)[(TOPIC, 0)] == 2  # past the dead letter
    assert sub.status()["dead_lettered_total"] == 1
    clock.advance(60)
    sub.tick()
    assert drain(stream) == []  # never redelivered


async def test_a_dead_letter_nack_without_a_dead_letter_topic_changes_nothing() -> None:
    sub, _, _, dead = make()
    stream = sub.open_stream(options())
    sub.on_records([rec(0, b"k")])
    [first] = drain(stream)
    with pytest.raises(NoDeadLetterTopic):
        sub.nack([first.lease.ack_id], dead_letter=True)
    await _settled()
    assert dead.written == []
    assert sub.ack([first.lease.ack_id])[0][1] is AckOutcome.APPLIED  # the lease is still live


async def test_dead_letter_nack_of_an_ended_lease_answers_its_status() -> None:
    sub, _, _, dead = make(dlq="dlq")
    stream = sub.open_stream(options())
    sub.on_records([rec(0, b"k")])
    [first] = drain(stream)
    sub.ack([first.lease.ack_id])
    assert sub.nack([first.lease.ack_id, "nope"], dead_letter=True) == [
        (first.lease.ack_id, AckOutcome.ALREADY_ACKED, None),
        ("nope", AckOutcome.UNKNOWN, None),
    ]
    await _settled()
    assert dead.written == []
