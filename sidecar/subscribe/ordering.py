"""Per-key ordering: which fetched records of an ordered subscription may be leased now.

Under DELIVERY_ORDER_PER_KEY at most one record per (topic, partition, key) is outstanding:
from its first lease until it settles (acked, or written to the dead-letter topic), across
every nack, expiry and closed stream in between. Records with a null key share one key per
partition. Newer records of a busy key wait here in offset order; when the outstanding one
settles, the next becomes free. So a record and its redeliveries come before any newer record
of its key, whatever the leases do.

This module holds keys only, never records or leases, and never grants: the dispatcher asks
it whether a fetched record may go to the fresh queue, and tells it when a record settled.
Unordered subscriptions have no `KeyOrder` at all, so their path does no per-key work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from sidecar.subscribe.leases import DeliveryKey, TopicPartition

#: (topic, partition, record key); None is the null key.
OrderKey = tuple[str, int, bytes | None]


class KeyOrder:
    """The records of an ordered subscription that wait for an older record of their key."""

    def __init__(self) -> None:
        # A key is busy while it has an entry: the queue holds the records waiting behind the
        # busy one (often none), oldest first.
        self._waiting: dict[OrderKey, deque[DeliveryKey]] = {}
        self._count = 0

    def __len__(self) -> int:
        """How many records wait behind an older record of their key."""
        return self._count

    def busy(self, order: OrderKey) -> bool:
        return order in self._waiting

    def admit(self, order: OrderKey, key: DeliveryKey) -> bool:
        """A record was fetched: True if it may be delivered now (its key is idle, and is busy
        from now on); otherwise it waits until the older records of its key settle."""
        queue = self._waiting.get(order)
        if queue is None:
            self._waiting[order] = deque()
            return True
        queue.append(key)
        self._count += 1
        return False

    def settle(self, order: OrderKey) -> DeliveryKey | None:
        """The outstanding record of `order` settled: the next record of the key, which may be
        delivered now (the key stays busy with it), or None (the key is idle)."""
        queue = self._waiting.get(order)
        if queue is None:
            return None
        if not queue:
            del self._waiting[order]
            return None
        self._count -= 1
        return queue.popleft()

    def drop_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget the keys of partitions taken from this sidecar (their records go too)."""
        gone = set(partitions)
        for order in [o for o in self._waiting if (o[0], o[1]) in gone]:
            self._count -= len(self._waiting.pop(order))
