"""The records a subscription holds (fetched, not yet settled) and the queue of fresh ones.

Pure logic on the event loop. A fetched record of an assigned partition is held until it
settles (acked, dead-lettered) or its partition is revoked; a fresh record (never leased) waits
in `fresh` for a stream, in fetch order. Under per-key ordering a record whose key is busy
waits in `KeyOrder` instead and joins the head of `fresh` when the older record of its key
settles. It knows nothing of leases, streams or Kafka clients.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from sidecar.kafka.ports import FetchedRecord
from sidecar.subscribe.acktracker import PartitionAckTracker
from sidecar.subscribe.leases import DeliveryKey, TopicPartition
from sidecar.subscribe.ordering import KeyOrder

# Builds a named tuple without its Python-level __new__, on paths taken once per record.
_new_tuple = tuple.__new__


class HeldRecords:
    """Held records by delivery key, their key/value/header bytes, and the fresh queue."""

    def __init__(self, per_key_order: bool) -> None:
        #: Read directly on the per-record paths; changed only through the methods below.
        self.records: dict[DeliveryKey, FetchedRecord] = {}
        self.fresh: deque[DeliveryKey] = deque()
        self.bytes = 0
        self._order = KeyOrder() if per_key_order else None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def waiting_for_key(self) -> int:
        """Records waiting behind an older record of their key."""
        return len(self._order) if self._order is not None else 0

    def take_fetched(
        self,
        records: Iterable[FetchedRecord],
        trackers: Mapping[TopicPartition, PartitionAckTracker],
    ) -> set[TopicPartition]:
        """Hold the fetched records of tracked partitions; the partitions in which a record
        turned out acked before a restart (not held; their commit is due)."""
        held, acked_before = self.records, set()
        # Unordered: straight to the fresh queue, no per-key work.
        admit = self.fresh.append if self._order is None else self._admit_in_order
        size = 0
        for record in records:
            topic, partition, offset = record.topic, record.partition, record.offset
            tracker = trackers.get((topic, partition))
            if tracker is None:
                continue  # not ours (any more): its owner fetches it again
            try:
                deliver = tracker.track(offset)
            except ValueError:
                continue  # fetched twice (a re-fetch after a pause): already tracked
            if not deliver:
                acked_before.add((topic, partition))
                continue
            key = _new_tuple(DeliveryKey, (topic, partition, offset))
            held[key] = record
            size += record.size
            admit(key)
        self.bytes += size
        return acked_before

    def settle(self, key: DeliveryKey) -> FetchedRecord | None:
        """`key` settled: release it (and, ordered, free the next record of its key)."""
        if self._order is not None:
            record = self.records.get(key)
            if record is not None:
                following = self._order.settle((key.topic, key.partition, record.key))
                if following is not None:
                    self.fresh.appendleft(following)  # it waited its turn: next in line
        return self.forget(key)

    def forget(self, key: DeliveryKey) -> FetchedRecord | None:
        """Stop holding `key`; the record, if it was held."""
        record = self.records.pop(key, None)
        if record is not None:
            self.bytes -= record.size
        return record

    def drop_partitions(self, gone: set[TopicPartition]) -> list[DeliveryKey]:
        """Forget the fresh and waiting records of revoked partitions; every held key of them
        (the caller forgets each)."""
        if self._order is not None:
            self._order.drop_partitions(gone)
        self.fresh = deque(k for k in self.fresh if k.topic_partition not in gone)
        return [k for k in self.records if k.topic_partition in gone]

    def _admit_in_order(self, key: DeliveryKey) -> None:
        """A fetched record of an ordered subscription: fresh if its key is idle, else it waits."""
        assert self._order is not None
        if self._order.admit((key.topic, key.partition, self.records[key].key), key):
            self.fresh.append(key)
