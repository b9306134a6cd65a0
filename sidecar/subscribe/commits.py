"""A subscription's partitions and what each may commit: one ack tracker per assigned partition.

Pure logic. A partition is due once an ack (or a record found acked before a
restart) moved what it may commit; its commit offset never passes an unacked
record, and the acks above it travel in the commit metadata (ackcodec).
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.kafka.ports import AssignedPartition, CommitOffset
from sidecar.subscribe import ackcodec
from sidecar.subscribe.acktracker import PartitionAckTracker
from sidecar.subscribe.leases import TopicPartition


class PartitionCommits:
    """The assigned partitions' ack trackers, and which of them have a commit due."""

    def __init__(self) -> None:
        #: Read directly on the per-record path; changed only through the methods below.
        self.trackers: dict[TopicPartition, PartitionAckTracker] = {}
        self._due: set[TopicPartition] = set()

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self.trackers)

    @property
    def any_due(self) -> bool:
        return bool(self._due)

    def assign(self, partitions: Iterable[AssignedPartition]) -> None:
        """Track each partition from its committed offset, with the acks its metadata carries."""
        for part in partitions:
            acked: frozenset[int] = frozenset()
            if part.committed is not None:
                acked = ackcodec.decode(part.metadata, part.committed)
            self.trackers[(part.topic, part.partition)] = PartitionAckTracker(part.committed, acked)

    def mark_due(self, partition: TopicPartition) -> None:
        self._due.add(partition)

    def ack(self, partition: TopicPartition, offset: int) -> None:
        tracker = self.trackers.get(partition)
        if tracker is not None:
            tracker.ack(offset)
            self._due.add(partition)

    def revoke(self, partitions: Iterable[TopicPartition], lost: bool) -> list[CommitOffset]:
        """Stop tracking `partitions`; their last commits, unless they were lost."""
        gone = set(partitions)
        offsets = [] if lost else self._offsets(gone)
        for tp in gone:
            self.trackers.pop(tp, None)
            self._due.discard(tp)
        return offsets

    def take_due(self) -> list[CommitOffset]:
        """The commits due now; none is due afterwards until the next ack."""
        offsets = self._offsets(self._due)
        self._due.clear()
        return offsets

    def _offsets(self, partitions: Iterable[TopicPartition]) -> list[CommitOffset]:
        offsets: list[CommitOffset] = []
        for tp in partitions:
            tracker = self.trackers.get(tp)
            position = tracker.committable() if tracker is not None else None
            if tracker is None or position is None:
                continue
            metadata = ackcodec.encode(tracker.sparse_acks(), position)
            offsets.append(CommitOffset(tp[0], tp[1], position, metadata))
        return offsets
