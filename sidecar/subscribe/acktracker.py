"""Which offset of one Kafka partition is safe to commit.

This module owns the at-least-once rule on the commit side: the committed offset never passes a
record that was fetched but not acked. It knows offsets only, never records, leases, streams or
Kafka clients, and it must never commit anything itself; the caller reads `committable()` and
`sparse_acks()` and commits them (see `ackcodec` for the metadata).

Offsets arrive in increasing order but not contiguously: compaction and transaction markers leave
gaps, so "last tracked + 1" is not "next tracked". Acks arrive in any order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class PartitionAckTracker:
    """Fetched and acked offsets of one partition since this sidecar took it over.

    `start_offset` is the committed position the partition resumed from (None when the group has
    no commit yet and the position is not known until the first record arrives).
    `already_acked` are offsets at or above it that were acked before the restart, restored from
    the commit metadata; when they are fetched again they are not delivered and count as acked.
    """

    def __init__(self, start_offset: int | None, already_acked: Iterable[int] = ()) -> None:
        restored = sorted(set(already_acked))
        if restored and start_offset is None:
            raise ValueError("acked offsets cannot be restored without a start offset")
        if restored and start_offset is not None and restored[0] < start_offset:
            raise ValueError(f"restored ack {restored[0]} is below start offset {start_offset}")
        self._start_offset = start_offset
        self._last_tracked: int | None = None
        # Tracked offsets from the committable one up, in fetch order; the head is always unacked
        # because acked heads are pruned as soon as they become a prefix.
        self._window: deque[int] = deque()
        self._unacked: set[int] = set()
        self._acked: set[int] = set()
        # Restored acks not yet fetched again, ascending, consumed in step with `track`.
        self._restored: deque[int] = deque(restored)
        self._restored_set: set[int] = set(restored)

    def should_skip(self, offset: int) -> bool:
        """True if the fetched record at `offset` was acked before the restart: do not deliver."""
        return offset in self._restored_set

    def track(self, offset: int) -> bool:
        """Record that `offset` was fetched; returns True if it must be delivered.

        Returns False (and counts it as acked) for an offset restored as already acked.
        """
        if self._last_tracked is not None and offset <= self._last_tracked:
            raise ValueError(f"offset {offset} tracked after {self._last_tracked}")
        if self._start_offset is not None and offset < self._start_offset:
            raise ValueError(f"offset {offset} is below start offset {self._start_offset}")
        self._last_tracked = offset
        # Restored acks below the fetched offset are gone from the log (retention, compaction):
        # nothing is left to skip or to keep acknowledging for them.
        while self._restored and self._restored[0] < offset:
            self._restored_set.discard(self._restored.popleft())
        if self._restored and self._restored[0] == offset:
            self._restored_set.discard(self._restored.popleft())
            if self._window:
                self._window.append(offset)
                self._acked.add(offset)
            return False
        self._window.append(offset)
        self._unacked.add(offset)
        return True

    def ack(self, offset: int) -> bool:
        """Mark `offset` processed; returns False if it was already settled (nothing changes)."""
        if offset in self._unacked:
            self._unacked.discard(offset)
            self._acked.add(offset)
            self._prune()
            return True
        committable = self.committable()
        # Offsets below the committable one are forgotten, so an acked record and a log gap look
        # alike there; both are settled, which keeps a late double ack harmless.
        if offset in self._acked or (committable is not None and offset < committable):
            return False
        raise ValueError(f"offset {offset} was never tracked")

    def committable(self) -> int | None:
        """The offset to commit: the first tracked unacked offset, else one past the last tracked.

        None while nothing was tracked and there is no start offset.
        """
        if self._window:
            return self._window[0]
        if self._last_tracked is not None:
            return self._last_tracked + 1
        return self._start_offset

    def sparse_acks(self) -> frozenset[int]:
        """Acked offsets at or above `committable()`, to keep in the commit metadata.

        Without them a restart would redeliver every acked record behind a slow one.
        """
        return frozenset(self._acked | self._restored_set)

    def outstanding(self) -> int:
        """How many tracked records still wait for an ack."""
        return len(self._unacked)

    def _prune(self) -> None:
        while self._window and self._window[0] in self._acked:
            self._acked.discard(self._window.popleft())
