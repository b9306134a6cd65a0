"""Records waiting to be delivered again, and how long to make them wait.

This module owns the waiting room between a lease ending (nack, expiry, closed stream) and the
next grant. It holds keys and attempt numbers only, never payloads or leases, and must never
grant anything itself: the dispatcher pops ready records and leases them. It reads time only
from the injected clock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from typing import NamedTuple

from sidecar import failpoints
from sidecar.clock import Clock
from sidecar.subscribe.leases import DeliveryKey, TopicPartition

#: A redelivery waits up to this fraction longer than its backoff, so that records that failed
#: together do not all come back in the same instant.
JITTER = 0.2


def redelivery_backoff(
    attempt: int, low: float, high: float, rng: random.Random | None = None
) -> float:
    """The wait before redelivering a record whose delivery `attempt` (1-based) failed.

    `low` after the first attempt, doubling per attempt up to `high`; the jitter only adds to
    that (at most `JITTER` of it, never past `high`), so `low` is a true minimum and `high` a
    true maximum.
    """
    delay = min(high, low * 2.0 ** min(max(attempt - 1, 0), 60))
    if delay <= 0:
        return 0.0
    return min(high, delay * (1 + (rng or random).uniform(0, JITTER)))


class Redelivery(NamedTuple):
    """A record due for delivery attempt number `attempt`."""

    key: DeliveryKey
    attempt: int


class RedeliveryQueue:
    """Records ordered by when they may be delivered again, then by offset."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, DeliveryKey, int]] = []
        self._queued: set[DeliveryKey] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, key: object) -> bool:
        return key in self._queued

    def schedule(self, key: DeliveryKey, attempt: int, ready_at: float) -> None:
        """Deliver `key` again as attempt `attempt`, no sooner than monotonic time `ready_at`."""
        if key in self._queued:
            # Two pending redeliveries would become two concurrent leases of one record.
            raise ValueError(f"{key} is already waiting for redelivery")
        heapq.heappush(self._heap, (ready_at, key, attempt))
        self._queued.add(key)

    def pop_ready(self, limit: int) -> list[Redelivery]:
        """Remove and return up to `limit` records whose time has come, earliest first."""
        now = self._clock.monotonic()
        ready: list[Redelivery] = []
        while self._heap and len(ready) < limit and self._heap[0][0] <= now:
            _, key, attempt = heapq.heappop(self._heap)
            self._queued.discard(key)
            ready.append(Redelivery(key, attempt))
        if ready:
            failpoints.hit("subscribe.redeliver")  # out of the waiting room, not leased yet
        return ready

    def drop_partitions(self, partitions: Iterable[TopicPartition]) -> list[Redelivery]:
        """Forget the records of partitions taken from this sidecar; returns what was dropped."""
        gone = set(partitions)
        kept: list[tuple[float, DeliveryKey, int]] = []
        dropped: list[Redelivery] = []
        for entry in self._heap:
            _, key, attempt = entry
            if key.topic_partition in gone:
                dropped.append(Redelivery(key, attempt))
                self._queued.discard(key)
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._heap = kept
        return sorted(dropped)

    def next_ready_at(self) -> float | None:
        """When the earliest waiting record becomes ready, for sleeping until `pop_ready`."""
        return self._heap[0][0] if self._heap else None
