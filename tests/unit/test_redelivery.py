"""RedeliveryQueue ordering."""

from __future__ import annotations

import pytest

from sidecar.clock import ManualClock
from sidecar.subscribe.leases import DeliveryKey
from sidecar.subscribe.redelivery import Redelivery, RedeliveryQueue


def key(offset: int, partition: int = 0, topic: str = "orders") -> DeliveryKey:
    return DeliveryKey(topic, partition, offset)


def test_only_records_whose_time_has_come_are_popped() -> None:
    clock = ManualClock()
    queue = RedeliveryQueue(clock)
    queue.schedule(key(1), attempt=2, ready_at=5.0)
    queue.schedule(key(2), attempt=3, ready_at=0.0)
    assert queue.pop_ready(10) == [Redelivery(key(2), 3)]
    assert len(queue) == 1
    assert queue.next_ready_at() == 5.0
    clock.advance(4.9)
    assert queue.pop_ready(10) == []
    clock.advance(0.1)
    assert queue.pop_ready(10) == [Redelivery(key(1), 2)]
    assert queue.next_ready_at() is None
    assert len(queue) == 0


def test_earliest_first_then_offset_order() -> None:
    clock = ManualClock(start=10.0)
    queue = RedeliveryQueue(clock)
    queue.schedule(key(9), 1, 3.0)
    queue.schedule(key(5, partition=1), 1, 3.0)
    queue.schedule(key(7), 1, 3.0)
    queue.schedule(key(8), 1, 1.0)
    assert [r.key for r in queue.pop_ready(10)] == [key(8), key(7), key(9), key(5, partition=1)]


def test_pop_respects_the_limit() -> None:
    queue = RedeliveryQueue(ManualClock())
    for offset in range(5):
        queue.schedule(key(offset), 1, 0.0)
    assert queue.pop_ready(0) == []
    assert [r.key.offset for r in queue.pop_ready(2)] == [0, 1]
    assert [r.key.offset for r in queue.pop_ready(10)] == [2, 3, 4]


def test_a_record_waits_at_most_once() -> None:
    queue = RedeliveryQueue(ManualClock())
    queue.schedule(key(1), 1, 0.0)
    assert key(1) in queue
    with pytest.raises(ValueError, match="already waiting"):
        queue.schedule(key(1), 2, 1.0)
    queue.pop_ready(1)
    assert key(1) not in queue
    queue.schedule(key(1), 2, 1.0)


def test_dropped_partitions_are_forgotten() -> None:
    clock = ManualClock()
    queue = RedeliveryQueue(clock)
    queue.schedule(key(1), 2, 0.0)
    queue.schedule(key(2, partition=1), 1, 0.0)
    queue.schedule(key(3), 1, 2.0)
    queue.schedule(key(4, topic="payments"), 1, 1.0)
    dropped = queue.drop_partitions([("orders", 0), ("absent", 0)])
    assert dropped == [Redelivery(key(1), 2), Redelivery(key(3), 1)]
    assert key(1) not in queue
    assert len(queue) == 2
    queue.schedule(key(1), 1, 0.0)
    clock.advance(5.0)
    assert [r.key for r in queue.pop_ready(10)] == [
        key(1),
        key(2, partition=1),
        key(4, topic="payments"),
    ]
